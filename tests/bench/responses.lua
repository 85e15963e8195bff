-- wrk script: a Responses API request served by the OpenAI-wire provider
-- (Responses in, OpenAI upstream; the answer is kept in the response
-- store, as every answer is by default).
wrk.method = "POST"
wrk.path = "/v1/responses"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o","max_output_tokens":100,"input":"benchmark me please"}'
