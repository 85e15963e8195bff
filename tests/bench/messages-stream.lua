-- wrk script: a streamed Anthropic Messages request served by the
-- OpenAI-wire provider, the mock's stream fixed at four content events.
wrk.method = "POST"
wrk.path = "/v1/messages"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.body = '{"model":"gpt-4o","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"benchmark me please [[mock:chunks=4]]"}]}'
