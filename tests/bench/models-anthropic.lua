-- wrk script: the model list (GET /v1/models) with anthropic-version, so in
-- Anthropic's shape, answered by the gateway from its config.
wrk.method = "GET"
wrk.path = "/v1/models"
wrk.headers["anthropic-version"] = "2023-06-01"
