-- wrk script: a non-stream chat completion with a consumer's key (the
-- key-auth and limits rows).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer k-bench-consumer-0"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"user","content":"benchmark me please"}]}'
