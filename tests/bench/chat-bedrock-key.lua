-- wrk script: a non-stream chat completion served by the bedrock provider
-- with a Bedrock API key (OpenAI in, Bedrock upstream, no signing on
-- either side).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"meta.llama3-8b-instruct-v1:0","messages":[{"role":"user","content":"benchmark me please"}]}'
