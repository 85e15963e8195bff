-- wrk script: Anthropic's token counting (POST /v1/messages/count_tokens)
-- for a model an OpenAI-wire provider serves: the gateway's estimate, no
-- upstream request.
wrk.method = "POST"
wrk.path = "/v1/messages/count_tokens"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.body = '{"model":"gpt-4o","system":"be brief","messages":[{"role":"user","content":"benchmark me please"}]}'
