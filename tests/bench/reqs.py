#!/usr/bin/env python3
"""Sends N sequential keep-alive requests and reads each answer whole.

    reqs.py PORT N PATH BODY [AUTHORIZATION] [--get] [--gzip] [--header NAME:VALUE]...

The instruction-count benchmark runs it against a server under callgrind;
it exits non-zero when an answer is not a 200, so a count is never taken
over errors. --get sends GETs (BODY unused, no Content-Type), --gzip sends
BODY gzip'd (Content-Encoding: gzip), --header adds a header. A streamed
answer (chunked) is read to its end.
"""
import gzip
import http.client
import sys

args, flags, headers = [], set(), {}
argv = iter(sys.argv[1:])
for a in argv:
    if a in ("--get", "--gzip"):
        flags.add(a)
    elif a == "--header":
        name, _, value = next(argv).partition(":")
        headers[name.strip()] = value.strip()
    else:
        args.append(a)
port, n, path, body = int(args[0]), int(args[1]), args[2], args[3]
method = "GET" if "--get" in flags else "POST"
data = None
if method == "POST":
    headers["Content-Type"] = "application/json"
    data = body.encode()
    if "--gzip" in flags:
        data = gzip.compress(data, mtime=0)
        headers["Content-Encoding"] = "gzip"
if len(args) > 4:
    headers["Authorization"] = args[4]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for i in range(n):
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        sys.exit(f"request {i}: status {resp.status}")
conn.close()
