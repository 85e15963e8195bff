#!/usr/bin/env bash
# Requests per second of the translating paths beside nginx, pinned as
# run.sh pins them (the mock, nginx and the gateway on one core, wrk on
# the other): nginx, plain chat, Gemini in, Responses in (stored),
# Anthropic in, OpenAI in with an Anthropic upstream and with the
# Responses API as the upstream wire, in interleaved rounds; each row's
# ratio to nginx is taken within its round, and the range over the
# rounds is printed with the median. With a second build directory, its
# gateway runs beside this one's in the same rounds (an A/B).
#   tests/bench/xlate.sh [seconds per run, default 5] [rounds, default 3] [other build dir]
# Expects build/ to be built.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-5}
ROUNDS=${2:-3}
OTHER=${3:-}
source tests/bench/lib.sh
bench_pin
bench_mock
NGINX=$(free_port)
nginx_on nginx "$NGINX"

gateway() {  # name, build dir -> port in $T/name.port
  local dir; dir=$(cd "$2" && pwd)
  cat > "$T/$1.yaml" <<YAML
listen: 127.0.0.1:0
workers: 1
log_level: info
plugin_dir: $dir/plugins
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
  - name: openai-responses
    type: openai
    base_url: http://127.0.0.1:$MOCK/v1
    keys: ["sk-bench-0123456789abcdef"]
    models: ["o1-*"]
    options: { wire: responses }
stages:
  - name: accesslog
    plugin: accesslog
    config: { path: $T/$1-access.log }
YAML
  $SRV "$dir/manifold" -c "$T/$1.yaml" 2> "$T/$1.err" & pids+=($!)
  for _ in $(seq 100); do grep -q listening "$T/$1.err" && break; sleep 0.1; done
  sed -n 's/.*listening on [^:]*:\([0-9]*\).*/\1/p' "$T/$1.err" > "$T/$1.port"
  [ -s "$T/$1.port" ] || { cat "$T/$1.err" >&2; exit 1; }
}
gateway mf build
GWS=(mf)
if [ -n "$OTHER" ]; then gateway other "$OTHER"; GWS+=(other); fi

rps() {  # port, wrk script
  $CLI wrk -t1 -c32 -d"${D}s" -s "tests/bench/$2" "http://127.0.0.1:$1/v1/chat/completions" \
    | awk '/Requests\/sec/ {print $2}'
}
SCRIPTS=(chat.lua gemini-in.lua responses.lua messages.lua chat-claude.lua chat-responses-wire.lua)
declare -A LABEL=(
  [chat.lua]="plain chat"
  [gemini-in.lua]="Gemini in, OpenAI upstream"
  [responses.lua]="Responses in (stored), OpenAI up."
  [messages.lua]="Anthropic in, OpenAI upstream"
  [chat-claude.lua]="OpenAI in, Anthropic upstream"
  [chat-responses-wire.lua]="OpenAI in, Responses upstream wire"
)
rps "$NGINX" chat.lua >/dev/null   # warm up
for g in "${GWS[@]}"; do for s in "${SCRIPTS[@]}"; do D=1 rps "$(cat "$T/$g.port")" "$s" >/dev/null; done; done
declare -A RATIOS RPS
NG=""
for round in $(seq "$ROUNDS"); do
  n=$(rps "$NGINX" chat.lua); NG+="$n "
  for s in "${SCRIPTS[@]}"; do
    for g in "${GWS[@]}"; do
      v=$(rps "$(cat "$T/$g.port")" "$s")
      RPS[$g.$s]+="$v "
      RATIOS[$g.$s]+="$(awk -v a="$v" -v b="$n" 'BEGIN { printf "%.2f", a / b }') "
    done
  done
done
median() { printf "%s\n" "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
range() { printf "%s\n" "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2fx-%.2fx", lo, hi }'; }
echo "non-stream requests, 32 connections, $ROUNDS interleaved rounds of ${D}s (ratio to nginx within each round)"
printf "  %-36s %-8s %9s req/s (median)\n" "nginx (1 worker, keepalive)" "" "$(median $NG)"
for s in "${SCRIPTS[@]}"; do
  for g in "${GWS[@]}"; do
    printf "  %-36s %-8s %9s req/s   %s (median %sx)\n" "${LABEL[$s]}" "$g" \
      "$(median ${RPS[$g.$s]})" "$(range ${RATIOS[$g.$s]})" "$(median ${RATIOS[$g.$s]})"
  done
done
