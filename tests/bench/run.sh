#!/usr/bin/env bash
# Benchmark: wrk against the mock directly, a plain nginx reverse proxy (1
# worker, keep-alive upstream) and Manifold (1 worker) on the same mock, in
# one run; prints each figure with its ratio to nginx. Two set-ups: wrk on
# one core and the servers (mock and proxies) on the other; then each
# proxy alone on its core with wrk and a second mock on the other. Ends
# with the instructions per request (instr.sh) and the cost of the
# observability stages (obs.sh). Rows for key-auth + limits with one
# consumer, on the embedded store and on Redis (a redis-server on the
# servers' core). Nothing is asserted.
#   tests/bench/run.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/deps.sh test
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
D=${1:-10}
T=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wrk gets one core, the servers share the other: the figures then show
# the CPU each proxy spends per request, not the scheduler's moods
CPUS=$(nproc)
SRV="taskset -c $((CPUS - 1))"; CLI="taskset -c 0"
[ "$CPUS" -ge 2 ] || { SRV=""; CLI=""; }
$SRV build/tests/mock/mf-mock --port 0 > "$T/mock.port" & pids+=($!)
sleep 0.3; MOCK=$(head -1 "$T/mock.port")
nginx_on() {  # name, port, mock port: a plain nginx reverse proxy on $SRV
  mkdir -p "$T/$1"
  cat > "$T/$1.conf" <<NGX
worker_processes 1;
pid $T/$1/nginx.pid;
error_log $T/$1/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $T/$1; proxy_temp_path $T/$1;
  upstream mock { server 127.0.0.1:$3; keepalive 64; }
  server {
    listen 127.0.0.1:$2;
    location / { proxy_pass http://mock; proxy_http_version 1.1;
                 proxy_set_header Connection ""; proxy_buffering off; }
  }
}
NGX
  $SRV nginx -c "$T/$1.conf" -p "$T/$1" -g 'daemon off;' & pids+=($!)
}
NGINX=$(free_port)
nginx_on nginx "$NGINX" "$MOCK"

gateway() {  # name, extra stages[, more config]
  cat > "$T/$1.yaml" <<YAML
listen: 127.0.0.1:0
workers: 1
log_level: info
plugin_dir: $PWD/build/plugins
providers:
  - name: openai
    type: openai
    base_url: http://127.0.0.1:$MOCK/v1
    keys: ["sk-bench-0123456789abcdef"]
    models: ["gpt-*"]
  - name: anthropic
    type: anthropic
    base_url: http://127.0.0.1:$MOCK
    keys: ["sk-ant-bench-0123456789"]
    models: ["claude-*"]
  - name: gemini
    type: gemini
    base_url: http://127.0.0.1:$MOCK
    keys: ["AIza-bench-0123456789"]
    models: ["gemini-*"]
  - name: bedrock
    type: bedrock
    base_url: http://127.0.0.1:$MOCK
    keys: ["AKIDBENCH:mock/secret/AKIDBENCH"]
    models: ["anthropic.*"]
  - name: bedrock-key
    type: bedrock
    base_url: http://127.0.0.1:$MOCK
    keys: ["ABSKbench0123456789"]
    models: ["meta.*"]
  - name: openai-responses
    type: openai
    base_url: http://127.0.0.1:$MOCK/v1
    keys: ["sk-bench-0123456789abcdef"]
    models: ["o1-*"]
    options: { wire: responses }
stages:
$2
  - name: accesslog
    plugin: accesslog
    config: { path: $T/$1-access.log }
${3:-}
YAML
  $SRV build/manifold -c "$T/$1.yaml" 2> "$T/$1.err" & pids+=($!)
  echo $! > "$T/$1.pid"
  for _ in $(seq 50); do grep -q listening "$T/$1.err" && break; sleep 0.1; done
  sed -n 's/.*listening on [^:]*:\([0-9]*\).*/\1/p' "$T/$1.err" > "$T/$1.port"
}
gateway mf ""
gateway mflua "  - name: route
    lua: $PWD/tests/bench/route.lua"
# the exact cache: wrk sends one body, so every request after the first
# is a hit that never reaches the mock
gateway mfcache "  - name: cache
    plugin: cache"
# governance: key-auth and limits with one consumer (rates, concurrency and
# a USD budget: every mechanism on every request), on the embedded store
# and on the Redis store (a redis-server on the servers' core)
GOV_STAGES="  - { name: auth, plugin: key-auth, config: { secret: bench-secret-0123456789abcdef } }
  - name: limits
    plugin: limits
    config: { db: $T/usage-\$NAME.db }"
GOV_CONF="consumers:
  - name: bench
    keys: [\"k-bench-consumer-0\"]
    limits: { rpm: 100000000, tpm: 1000000000000, concurrency: 10000 }
    budget: { usd: 100000000, period: month }
prices:
  gpt-4o: { input: 2.5, output: 10 }"
gateway mfgov "${GOV_STAGES//\$NAME/local}" "$GOV_CONF"
REDIS=$(free_port)
$SRV redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
gateway mfredis "${GOV_STAGES//\$NAME/redis}" "$GOV_CONF
redis: { host: 127.0.0.1, port: $REDIS, timeout: 1s }"
gateway mfmask "  - name: mask
    plugin: mask"
MF=$(cat "$T/mf.port"); MFLUA=$(cat "$T/mflua.port"); MFPID=$(cat "$T/mf.pid")
MFGOV=$(cat "$T/mfgov.port"); MFREDIS=$(cat "$T/mfredis.port")
MFMASK=$(cat "$T/mfmask.port")
MFCACHE=$(cat "$T/mfcache.port")
# the second set-up: each proxy alone on its core, wrk and a second mock
# on the other; the proxy's own cost per request shows most here
$CLI build/tests/mock/mf-mock --port 0 > "$T/mock2.port" & pids+=($!)
sleep 0.3; MOCK2=$(head -1 "$T/mock2.port")
NGINX2=$(free_port)
nginx_on nginx2 "$NGINX2" "$MOCK2"
MOCK1=$MOCK; MOCK=$MOCK2; gateway mf2 ""; MOCK=$MOCK1
MF2=$(cat "$T/mf2.port")
sleep 0.5
IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/$MFPID/status)

rps() {  # port, connections[, wrk script]
  $CLI wrk -t1 -c"$2" -d"${D}s" -s "tests/bench/${3:-chat.lua}" "http://127.0.0.1:$1/v1/chat/completions" \
    | awk '/Requests\/sec/ {print $2}'
}
lat() {  # port: "p50 p99" latency in ms at 1 connection
  $CLI wrk -t1 -c1 -d"${D}s" --latency -s tests/bench/chat.lua "http://127.0.0.1:$1/v1/chat/completions" \
    | awk 'function ms(v) { if (v ~ /us$/) { sub(/us/,"",v); return v/1000 } if (v ~ /ms$/) { sub(/ms/,"",v); return v+0 } sub(/s/,"",v); return v*1000 }
           $1=="50%" { p50=ms($2) } $1=="99%" { p99=ms($2) } END { print p50, p99 }'
}
median3() { printf "%s\n" "$@" | sort -g | sed -n 2p; }
for port in $MOCK $NGINX $MF $MFLUA $MFCACHE; do rps "$port" 8 >/dev/null; done   # warm up
for port in $MFGOV $MFREDIS; do rps "$port" 8 chat-auth.lua >/dev/null; done
# three interleaved rounds, the median of each figure (the machine is
# shared by wrk, the mock, nginx and Manifold: single runs drift)
declare -A RPS
for round in 1 2 3; do
  for name in MOCK NGINX MF MFLUA MFCACHE; do RPS[$name]+="$(rps "${!name}" 32) "; done
  for name in MFGOV MFREDIS; do RPS[$name]+="$(rps "${!name}" 32 chat-auth.lua) "; done
done
R_GOV=$(median3 ${RPS[MFGOV]}); R_REDIS=$(median3 ${RPS[MFREDIS]})
R_MOCK=$(median3 ${RPS[MOCK]}); R_NGINX=$(median3 ${RPS[NGINX]})
R_MF=$(median3 ${RPS[MF]}); R_LUA=$(median3 ${RPS[MFLUA]})
R_CACHE=$(median3 ${RPS[MFCACHE]})
for port in $NGINX2 $MF2; do rps "$port" 8 >/dev/null; done   # warm up
for round in 1 2 3; do
  for name in NGINX2 MF2; do RPS[$name]+="$(rps "${!name}" 32) "; done
done
R_NGINX2=$(median3 ${RPS[NGINX2]}); R_MF2=$(median3 ${RPS[MF2]})
# protocol translation: OpenAI in / Anthropic upstream, and the reverse
R_O2A=$(rps "$MF" 32 chat-claude.lua); R_A2O=$(rps "$MF" 32 messages.lua)
R_G2O=$(rps "$MF" 32 gemini-in.lua); R_R2O=$(rps "$MF" 32 responses.lua)
R_O2G=$(rps "$MF" 32 chat-gemini.lua); R_O2B=$(rps "$MF" 32 chat-bedrock.lua)
R_O2BK=$(rps "$MF" 32 chat-bedrock-key.lua)
R_CT=$(rps "$MF" 32 count-tokens.lua); R_O2R=$(rps "$MF" 32 chat-responses-wire.lua)
# the local answers of the Responses and model-list paths: one stored
# Response's input items, and one model (models.retrieve)
RESP_ID=$(curl -s "http://127.0.0.1:$MF/v1/responses" -H 'Content-Type: application/json' \
  -d '{"model":"gpt-4o","input":"benchmark me please"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
R_II=$(MF_RESP_ID=$RESP_ID rps "$MF" 32 input-items.lua); R_MR=$(rps "$MF" 32 models-retrieve.lua)
# the mask stage (built-in detectors, placeholders restored in the answer)
# on a 2 KB prompt, beside the same pipeline without it; interleaved
declare -A RPS2K
for round in 1 2 3; do
  RPS2K[MF]+="$(rps "$MF" 32 chat-2k.lua) "; RPS2K[MASK]+="$(rps "$MFMASK" 32 chat-2k.lua) "
  RPS2K[MFC]+="$(rps "$MF" 32 chat-2k-clean.lua) "; RPS2K[MASKC]+="$(rps "$MFMASK" 32 chat-2k-clean.lua) "
done
R_2K=$(median3 ${RPS2K[MF]}); R_2KMASK=$(median3 ${RPS2K[MASK]})
R_2KC=$(median3 ${RPS2K[MFC]}); R_2KMASKC=$(median3 ${RPS2K[MASKC]})
# one connection: three interleaved rounds, the median of each figure
declare -A P50 P99
for round in 1 2 3; do
  for name in MOCK NGINX MF; do
    read -r a b <<<"$(lat "${!name}")"
    P50[$name]+="$a "; P99[$name]+="$b "
  done
done
for name in MOCK NGINX MF; do
  printf -v "M50_$name" %s "$(median3 ${P50[$name]})"
  printf -v "L_$name" %s "$(median3 ${P99[$name]})"
done
STREAMS=$(node tests/bench/streams.mjs "$MF" "$MFPID" 1000)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
echo
echo "non-stream chat completions, 32 connections (wrk; median of 3 interleaved runs of ${D}s)"
printf "  %-34s %10s req/s\n" "mock direct" "$R_MOCK"
printf "  %-34s %10s req/s   1.00x\n" "nginx (1 worker, keepalive)" "$R_NGINX"
printf "  %-34s %10s req/s   %s  (target >= 0.70x)\n" "manifold (1 worker, accesslog)" "$R_MF" "$(ratio "$R_MF" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (target >= 0.60x)\n" "manifold + Lua on_route" "$R_LUA" "$(ratio "$R_LUA" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (target >= 1.50x)\n" "manifold, exact-cache hits" "$R_CACHE" "$(ratio "$R_CACHE" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (target >= 0.60x)\n" "key-auth + limits, embedded store" "$R_GOV" "$(ratio "$R_GOV" "$R_NGINX")"
printf "  %-34s %10s req/s   %s\n" "key-auth + limits, Redis store" "$R_REDIS" "$(ratio "$R_REDIS" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (target >= 0.50x)\n" "OpenAI in, Anthropic upstream" "$R_O2A" "$(ratio "$R_O2A" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (target >= 0.50x)\n" "Anthropic in, OpenAI upstream" "$R_A2O" "$(ratio "$R_A2O" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (target >= 0.50x)\n" "Gemini in, OpenAI upstream" "$R_G2O" "$(ratio "$R_G2O" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (target >= 0.50x)\n" "Responses in (stored), OpenAI upstr." "$R_R2O" "$(ratio "$R_R2O" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (target >= 0.50x)\n" "count_tokens, Anthropic upstream" "$R_CT" "$(ratio "$R_CT" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (target >= 0.50x)\n" "OpenAI in, Responses upstream wire" "$R_O2R" "$(ratio "$R_O2R" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (target >= 0.50x)\n" "Responses input_items (local)" "$R_II" "$(ratio "$R_II" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (target >= 0.50x)\n" "GET /v1/models/{id} (local)" "$R_MR" "$(ratio "$R_MR" "$R_NGINX")"
printf "  %-34s %10s req/s   %s\n" "OpenAI in, Gemini upstream" "$R_O2G" "$(ratio "$R_O2G" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (the mock checks each signature)\n" "OpenAI in, Bedrock (SigV4) upstream" "$R_O2B" "$(ratio "$R_O2B" "$R_NGINX")"
printf "  %-34s %10s req/s   %s\n" "OpenAI in, Bedrock (API key)" "$R_O2BK" "$(ratio "$R_O2BK" "$R_NGINX")"
printf "  %-34s %10s req/s   %s\n" "manifold, 2 KB prompt" "$R_2KC" "$(ratio "$R_2KC" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (%s of the same without mask; target >= 0.85x)\n" "manifold + mask, 2 KB, nothing found" "$R_2KMASKC" "$(ratio "$R_2KMASKC" "$R_NGINX")" "$(ratio "$R_2KMASKC" "$R_2KC")"
printf "  %-34s %10s req/s   %s\n" "manifold, 2 KB prompt with PII" "$R_2K" "$(ratio "$R_2K" "$R_NGINX")"
printf "  %-34s %10s req/s   %s  (%s of the same without mask; target >= 0.85x)\n" "manifold + mask, 2 KB with PII" "$R_2KMASK" "$(ratio "$R_2KMASK" "$R_NGINX")" "$(ratio "$R_2KMASK" "$R_2K")"
echo "the proxy alone on its core, wrk and the mock on the other (32 connections, median of 3)"
printf "  %-34s %10s req/s   1.00x\n" "nginx (1 worker, keepalive)" "$R_NGINX2"
printf "  %-34s %10s req/s   %s\n" "manifold (1 worker, accesslog)" "$R_MF2" "$(ratio "$R_MF2" "$R_NGINX2")"
echo "latency at 1 connection (median of 3 interleaved runs of ${D}s)"
printf "  %-34s p50 %6s ms   p99 %6s ms\n" "mock direct" "$M50_MOCK" "$L_MOCK" "nginx" "$M50_NGINX" "$L_NGINX" "manifold" "$M50_MF" "$L_MF"
awk -v m="$M50_MF" -v d="$M50_MOCK" -v n="$M50_NGINX" 'BEGIN { printf "  p50: manifold adds %.3f ms over direct; nginx adds %.3f ms\n", m - d, n - d }'
awk -v m="$L_MF" -v d="$L_MOCK" -v n="$L_NGINX" 'BEGIN { printf "  p99: manifold adds %.3f ms over direct (target < 0.2 ms); nginx adds %.3f ms\n", m - d, n - d }'
echo "memory"
printf "  idle RSS: %d KiB (target < 20480)\n" "$IDLE_RSS"
echo "  1000 concurrent paced streams: $STREAMS (target peak < 102400 KiB)"
echo
bash tests/bench/instr.sh
bash tests/bench/obs.sh "$D"
