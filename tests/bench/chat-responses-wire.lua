-- wrk script: a non-stream chat completion served by an openai provider
-- with options { wire: responses } (OpenAI chat in, the Responses API as
-- the upstream wire: the request becomes a Responses request and the
-- Response a chat completion).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"o1-pro","max_tokens":100,"messages":[{"role":"user","content":"benchmark me please"}]}'
