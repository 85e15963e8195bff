-- wrk script: Gemini's :embedContent served by the OpenAI-wire provider
-- (an OpenAI embeddings request upstream).
wrk.method = "POST"
wrk.path = "/v1beta/models/text-embedding-3-small:embedContent"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"content":{"parts":[{"text":"benchmark me please"}]}}'
