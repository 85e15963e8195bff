-- wrk script: an Anthropic Messages request served by the OpenAI-wire
-- provider (Anthropic in, OpenAI upstream).
wrk.method = "POST"
wrk.path = "/v1/messages"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o","max_tokens":100,"messages":[{"role":"user","content":"benchmark me please"}]}'
