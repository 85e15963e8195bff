-- wrk script: a non-stream chat completion served by the anthropic
-- provider (OpenAI in, Anthropic upstream).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"claude-sonnet-4","messages":[{"role":"user","content":"benchmark me please"}]}'
