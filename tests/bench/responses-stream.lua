-- wrk script: a streamed Responses API request (stream: true; response.*
-- events) served by the OpenAI-wire provider, the mock's stream fixed at
-- four content events; the answer is stored, as every answer is by default.
wrk.method = "POST"
wrk.path = "/v1/responses"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o","max_output_tokens":100,"stream":true,"input":"benchmark me please [[mock:chunks=4]]"}'
