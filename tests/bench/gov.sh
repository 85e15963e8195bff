#!/usr/bin/env bash
# The governance rows of run.sh alone, quicker to rerun: nginx, Manifold
# (1 worker, accesslog), and the same with key-auth + limits and one
# consumer on the embedded store and on the Redis store (a redis-server
# on the servers' core), pinned as run.sh pins them (wrk on one core, the
# servers on the other), 32 connections, ROUNDS interleaved rounds of D
# seconds. Prints each round's figures (the machine is shared: the spread
# says how far to trust them) and the median with its ratio to nginx.
# Nothing is asserted.
#   tests/bench/gov.sh [seconds per run, default 5] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-5}
ROUNDS=${2:-3}
[ -x build/manifold ] && [ -x build/tests/mock/mf-mock ] ||
  { echo "build/ first (cmake --build build)" >&2; exit 1; }
source tests/bench/lib.sh
bench_pin
bench_mock
NGINX=$(free_port)
nginx_on nginx "$NGINX"

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
stages:
$2
  - name: accesslog
    plugin: accesslog
    config: { path: $T/$1-access.log }
${3:-}
YAML
  $SRV build/manifold -c "$T/$1.yaml" >/dev/null 2> "$T/$1.err" & pids+=($!)
  for _ in $(seq 100); do grep -q listening "$T/$1.err" && break; sleep 0.1; done
  sed -n 's/.*listening on [^:]*:\([0-9]*\).*/\1/p' "$T/$1.err" | head -1 > "$T/$1.port"
}
# as run.sh: rates, concurrency and a USD budget, every mechanism on
# every request, none of them reached
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
gateway mf ""
gateway mfgov "${GOV_STAGES//\$NAME/local}" "$GOV_CONF"
REDIS=$(free_port)
$SRV redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
gateway mfredis "${GOV_STAGES//\$NAME/redis}" "$GOV_CONF
redis: { host: 127.0.0.1, port: $REDIS, timeout: 1s }"
MF=$(cat "$T/mf.port"); MFGOV=$(cat "$T/mfgov.port"); MFREDIS=$(cat "$T/mfredis.port")

rps() {  # port, wrk script
  $CLI wrk -t1 -c32 -d"${D}s" -s "tests/bench/$2" "http://127.0.0.1:$1/v1/chat/completions" |
    awk '/Requests\/sec/ {print $2}'
}
for p in $NGINX $MF; do rps "$p" chat.lua >/dev/null; done   # warm up
for p in $MFGOV $MFREDIS; do rps "$p" chat-auth.lua >/dev/null; done
declare -A RPS
for _ in $(seq "$ROUNDS"); do
  RPS[NGINX]+="$(rps "$NGINX" chat.lua) "
  RPS[MF]+="$(rps "$MF" chat.lua) "
  RPS[MFGOV]+="$(rps "$MFGOV" chat-auth.lua) "
  RPS[MFREDIS]+="$(rps "$MFREDIS" chat-auth.lua) "
done
median() { printf "%s\n" "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
N=$(median ${RPS[NGINX]})
echo "non-stream chat, 32 connections, $ROUNDS interleaved rounds of ${D}s (median; each round's ratio to that round's nginx)"
row() {  # label, name
  local m; m=$(median ${RPS[$2]})
  printf "  %-36s %9s req/s  %5s   rounds:" "$1" "$m" "$(awk -v a="$m" -v b="$N" 'BEGIN { printf "%.2fx", a / b }')"
  paste -d' ' <(tr ' ' '\n' <<<"${RPS[$2]}" | sed '/^$/d') <(tr ' ' '\n' <<<"${RPS[NGINX]}" | sed '/^$/d') |
    awk '{ printf " %.0f (%.2fx)", $1, $1 / $2 } END { print "" }'
}
row "nginx (1 worker, keepalive)" NGINX
row "manifold (1 worker, accesslog)" MF
row "+ key-auth + limits, embedded store" MFGOV
row "+ key-auth + limits, Redis store" MFREDIS
