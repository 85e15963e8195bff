-- wrk script: a Gemini generateContent request served by the OpenAI-wire
-- provider (Gemini in, OpenAI upstream).
wrk.method = "POST"
wrk.path = "/v1beta/models/gpt-4o:generateContent"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"contents":[{"role":"user","parts":[{"text":"benchmark me please"}]}],"generationConfig":{"maxOutputTokens":100}}'
