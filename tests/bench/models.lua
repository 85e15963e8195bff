-- wrk script: the model list (GET /v1/models) in OpenAI's shape, answered
-- by the gateway from its config.
wrk.method = "GET"
wrk.path = "/v1/models"
