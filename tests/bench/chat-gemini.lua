-- wrk script: a non-stream chat completion served by the gemini provider
-- (OpenAI in, Gemini upstream).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"benchmark me please"}]}'
