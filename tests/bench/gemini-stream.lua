-- wrk script: Gemini's streamGenerateContent without alt=sse (the answer a
-- JSON array streamed) served by the OpenAI-wire provider, the mock's
-- stream fixed at four content events.
wrk.method = "POST"
wrk.path = "/v1beta/models/gpt-4o:streamGenerateContent"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"contents":[{"role":"user","parts":[{"text":"benchmark me please [[mock:chunks=4]]"}]}],"generationConfig":{"maxOutputTokens":100}}'
