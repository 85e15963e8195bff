-- wrk script: an OpenAI embeddings request of two inputs (the nginx
-- yardstick of Gemini's :batchEmbedContents of two).
wrk.method = "POST"
wrk.path = "/v1/embeddings"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"text-embedding-3-small","input":["benchmark me please","and me too"]}'
