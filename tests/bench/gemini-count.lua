-- wrk script: Gemini's :countTokens for a model an OpenAI-wire provider
-- serves: the gateway's estimate, no upstream request.
wrk.method = "POST"
wrk.path = "/v1beta/models/gpt-4o:countTokens"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"contents":[{"role":"user","parts":[{"text":"benchmark me please"}]}]}'
