-- wrk script: Anthropic's token counting (POST /v1/messages/count_tokens)
-- forwarded to the anthropic provider's own counting endpoint (the mock
-- answers /v1/messages/count_tokens).
wrk.method = "POST"
wrk.path = "/v1/messages/count_tokens"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.body = '{"model":"claude-sonnet-4","system":"be brief","messages":[{"role":"user","content":"benchmark me please"}]}'
