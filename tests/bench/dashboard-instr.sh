#!/usr/bin/env bash
# Instructions per request of the dashboard stage, counted by valgrind's
# callgrind (the whole process, its thread included): the gateway with
# the accesslog stage alone, with the dashboard (roll-ups in memory,
# db: none), and with the dashboard's fleet view (fleet: redis, a
# redis-server started here, flush_s 1 so the thread writes to it about
# once for every few dozen requests under callgrind), one worker each,
# on the mock; nginx measured in the same run for scale.
# Each server is run twice, over N1 and N2 sequential keep-alive
# requests; (total(N2) - total(N1)) / (N2 - N1) cancels start-up and
# shutdown.
#   tests/bench/dashboard-instr.sh [N1 N2]     (default 200 1200)
# Expects build/ to be built, valgrind and redis-server installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${1:-200}
N2=${2:-1200}
source tests/bench/lib.sh
BODY='{"model":"gpt-4o","messages":[{"role":"user","content":"benchmark me please"}]}'

bench_mock
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
  >/dev/null & pids+=($!)
wait_port "$RPORT"

conf() {  # name, dashboard stage lines
  cat > "$T/$1.yaml" <<YAML
listen: 127.0.0.1:0
workers: 1
log_level: warn
plugin_dir: $PWD/build/plugins
redis: { host: 127.0.0.1, port: $RPORT }
status: { listen: 127.0.0.1:0 }
providers:
  - name: openai
    type: openai
    base_url: http://127.0.0.1:$MOCK/v1
    keys: ["sk-bench-0123456789abcdef"]
    models: ["gpt-*"]
prices:
  gpt-4o: { input: 2.5, output: 10 }
stages:
$2
  - { name: accesslog, plugin: accesslog, config: { path: $T/$1.log } }
YAML
}
conf base ""
conf dash "  - { name: dashboard, plugin: dashboard, config: { db: none } }"
conf fleet "  - { name: dashboard, plugin: dashboard, config: { db: none, fleet: redis, flush_s: 1 } }"

run() {  # name, requests -> total instructions
  local port; port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$T/$1.$2.out" \
    build/manifold -c "$T/$1.yaml" --listen "127.0.0.1:$port" \
      --workers 1 >/dev/null 2>"$T/$1.$2.err" & local pid=$!
  wait_port "$port" 600
  python3 tests/bench/reqs.py "$port" "$2" /v1/chat/completions "$BODY"
  kill -TERM "$pid"; wait "$pid" || true
  total "$T/$1.$2.out"
}

per_req() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (b - a) / n }'; }
NG=$(per_req "$(nginx_instr "$N1" "$BODY")" "$(nginx_instr "$N2" "$BODY")" $((N2 - N1)))
echo "instructions per non-stream request (callgrind, ($N2 - $N1) requests)"
printf "  %-40s %10s instr/req\n" "nginx (1 worker, keepalive)" "$NG"
for c in base dash fleet; do
  v=$(per_req "$(run "$c" "$N1")" "$(run "$c" "$N2")" $((N2 - N1)))
  eval "V_$c=$v"
  case $c in
    base) label="manifold + accesslog" ;;
    dash) label="+ dashboard (db: none)" ;;
    fleet) label="+ dashboard, fleet: redis" ;;
  esac
  printf "  %-40s %10s instr/req   %s\n" "$label" "$v" \
    "$(awk -v a="$v" -v b="$V_base" 'BEGIN { printf "%+.1f%% over accesslog alone", (a - b) * 100 / b }')"
done
redis-cli -p "$RPORT" --scan --pattern 'mf:dash:*' | wc -l | xargs printf "  (%s dashboard keys in Redis after the fleet runs)\n"
