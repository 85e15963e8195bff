-- wrk script: a streamed chat completion, the mock's answer fixed at four
-- content events (the directive chunks=4) and the usage chunk: what the
-- streamed inbound rows of xlate.sh ask the mock for, proxied as is (the
-- nginx yardstick of those rows).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"benchmark me please [[mock:chunks=4]]"}]}'
