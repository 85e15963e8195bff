-- wrk script: Gemini's :batchEmbedContents of two texts served by the
-- OpenAI-wire provider (one OpenAI embeddings request of two inputs).
wrk.method = "POST"
wrk.path = "/v1beta/models/text-embedding-3-small:batchEmbedContents"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"requests":[{"model":"models/text-embedding-3-small","content":{"parts":[{"text":"benchmark me please"}]}},{"model":"models/text-embedding-3-small","content":{"parts":[{"text":"and me too"}]}}]}'
