-- wrk script: a non-stream chat completion served by the bedrock provider
-- (OpenAI in, Bedrock upstream).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"anthropic.claude-3-5-haiku-20241022-v1:0","messages":[{"role":"user","content":"benchmark me please"}]}'
