#!/usr/bin/env bash
# What the intent router adds per request: the time of the decision
# itself, measured in the stage (the router's log line: from the model
# check to the route set; median and p99), the gateway's CPU time per
# request (utime + stime of its process, so the mock's work is excluded;
# coarse: clock ticks, and shared cores) and the wall time per
# sequential request, over N requests to model `auto`, for: no router
# (the model `gpt-4o` asked directly), the rules
# classifier (5 intents, 8 rules, a rule of the 4th intent matching), the
# embeddings classifier and the LLM classifier (each with its model call
# through the gateway, counted in the gateway's CPU), cache off so every
# request classifies. One worker. Nothing is asserted.
#   tests/bench/intent.sh [N]   (default 3000)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-3000}
T=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

build/tests/mock/mf-mock --port 0 > "$T/mock.port" & pids+=($!)
for _ in $(seq 50); do [ -s "$T/mock.port" ] && break; sleep 0.1; done
MOCK=$(head -1 "$T/mock.port")

run() {  # name, classifiers ("" = no router), model asked
  local port; port=$(free_port)
  local stage=""
  if [ -n "$2" ]; then
    stage="
  - name: intent
    lua: intent-router.lua
    config:
      classifiers: [$2]
      cache: false
      log: true
      embeddings: { model: text-embedding-bow, threshold: 0.3, margin: 0.01 }
      llm: { model: gpt-4o-mini }
      intents:
        - { name: code, model: gpt-4o, rules: [{ words: [bug, compile] }, { regex: 'stack ?trace' }], examples: [fix the bug in my function] }
        - { name: math, model: gpt-4o, rules: [{ regex: '\\\\b(integral|derivative)s?\\\\b' }], examples: [solve this integral] }
        - { name: vip, model: gpt-4o, rules: [{ headers: { x-tier: gold } }, { consumer: 'vip-*' }] }
        - { name: bench, model: gpt-4o, rules: [{ words: [zzz] }, { words: [benchmark] }], examples: [benchmark me please] }
        - { name: general, model: gpt-4o, rules: [{ min_tokens: 100000 }], examples: [tell me a story] }"
  fi
  cat > "$T/$1.yaml" <<YML
listen: 127.0.0.1:$port
workers: 1
plugin_dir: $PWD/build/plugins
providers:
  - name: openai
    type: openai
    base_url: http://127.0.0.1:$MOCK/v1
    keys: ["sk-bench-0123456789abcdef"]
    models: ["gpt-*", "text-embedding-*"]
stages:$stage
  - name: accesslog
    plugin: accesslog
    config: { path: $T/$1.log }
YML
  build/manifold -c "$T/$1.yaml" 2>"$T/$1.err" & local pid=$!
  pids+=($pid)
  wait_port "$port"
  local body="{\"model\":\"$3\",\"messages\":[{\"role\":\"user\",\"content\":\"benchmark me please\"}]}"
  python3 tests/bench/reqs.py "$port" 200 /v1/chat/completions "$body"   # warm
  local t0 w0 t1 w1
  t0=$(ticks "$pid"); w0=$(date +%s%N)
  python3 tests/bench/reqs.py "$port" "$N" /v1/chat/completions "$body"
  t1=$(ticks "$pid"); w1=$(date +%s%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$1" "$t0" "$t1" "$w0" "$w1" "$HZ" "$N" "$T/$1.err" <<'PY'
import re, sys
name, t0, t1, w0, w1, hz, n, err = sys.argv[1:]
t0, t1, w0, w1, hz, n = int(t0), int(t1), int(w0), int(w1), int(hz), int(n)
ms = sorted(float(x) for x in re.findall(r" in ([\d.]+) ms: ", open(err).read()))
ms = ms[200:]  # the warm-up requests
dec = "decision  median %6.1f us  p99 %6.1f us" % (ms[len(ms) // 2] * 1e3, ms[int(len(ms) * 0.99)] * 1e3) if ms else "decision       -"
print("%-24s %s   cpu %6.1f us/req   wall %7.1f us/req" % (name, dec, (t1 - t0) * 1e6 / hz / n, (w1 - w0) / 1e3 / n))
PY
}

run "no router (gpt-4o)" "" gpt-4o
run "rules classifier" "rules" auto
run "embeddings classifier" "embeddings" auto
run "llm classifier" "llm" auto
