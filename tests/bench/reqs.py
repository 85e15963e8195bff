#!/usr/bin/env python3
"""Sends N sequential keep-alive requests and reads each answer whole.

    reqs.py PORT N PATH BODY [AUTHORIZATION]

The instruction-count benchmark runs it against a server under callgrind;
it exits non-zero when an answer is not a 200, so a count is never taken
over errors.
"""
import http.client
import sys

port, n, path, body = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
headers = {"Content-Type": "application/json"}
if len(sys.argv) > 5:
    headers["Authorization"] = sys.argv[5]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for i in range(n):
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        sys.exit(f"request {i}: status {resp.status}")
conn.close()
