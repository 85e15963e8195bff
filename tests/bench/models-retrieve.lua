-- wrk script: one model as the OpenAI SDK's models.retrieve asks for it
-- (GET /v1/models/{id}), answered by the gateway from its config.
wrk.method = "GET"
wrk.path = "/v1/models/gpt-4o"
