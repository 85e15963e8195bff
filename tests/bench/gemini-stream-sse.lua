-- wrk script: Gemini's streamGenerateContent with alt=sse (what the SDKs
-- send) served by the OpenAI-wire provider, the mock's stream fixed at
-- four content events.
wrk.method = "POST"
wrk.path = "/v1beta/models/gpt-4o:streamGenerateContent?alt=sse"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"contents":[{"role":"user","parts":[{"text":"benchmark me please [[mock:chunks=4]]"}]}],"generationConfig":{"maxOutputTokens":100}}'
