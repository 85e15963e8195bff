-- wrk script: Gemini's model list (GET /v1beta/models), answered by the
-- gateway from its config.
wrk.method = "GET"
wrk.path = "/v1beta/models"
