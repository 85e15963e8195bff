-- wrk script: a non-stream chat completion.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"user","content":"benchmark me please"}]}'
