#!/usr/bin/env bash
# Instructions per request of the translating paths, counted by valgrind's
# callgrind as instr.sh counts the plain ones: nginx and Manifold (one
# worker, accesslog, the providers of run.sh on the same mock) each run
# twice, over N1 and N2 sequential keep-alive requests, and
# (total(N2) - total(N1)) / (N2 - N1) cancels start-up and shutdown. Rows:
# plain chat, Gemini in, Responses in (each answer stored), Anthropic in
# (all three served by the OpenAI-wire provider), OpenAI in with an
# Anthropic upstream, and OpenAI in with the Responses API as the upstream
# wire. The count does not drift with the machine's load.
#   tests/bench/instr-xlate.sh [N1 N2]   (default 200 1200)
# MF_BUILD=DIR counts another build's gateway (default build/).
# With MF_INSTR_PROFILES=DIR, each row's inclusive per-function profile
# (callgrind_annotate --inclusive=yes, over the N2 run) is written to
# DIR/<row>.txt, and both runs' callgrind files beside it (the difference
# of a function's counts between them, divided, is its cost per request:
# tests/bench/instr-diff.sh). Expects build/ to be built and valgrind installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${1:-200}
N2=${2:-1200}
B=$(cd "${MF_BUILD:-build}" && pwd)
source tests/bench/lib.sh
bench_mock "$B"

CHAT='{"model":"gpt-4o","messages":[{"role":"user","content":"benchmark me please"}]}'
# name | path | body: the bodies of tests/bench/*.lua
ROWS=(
  "plain|/v1/chat/completions|$CHAT"
  "gemini-in|/v1beta/models/gpt-4o:generateContent|{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"benchmark me please\"}]}],\"generationConfig\":{\"maxOutputTokens\":100}}"
  "responses-in|/v1/responses|{\"model\":\"gpt-4o\",\"max_output_tokens\":100,\"input\":\"benchmark me please\"}"
  "anthropic-in|/v1/messages|{\"model\":\"gpt-4o\",\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"benchmark me please\"}]}"
  "anthropic-up|/v1/chat/completions|{\"model\":\"claude-sonnet-4\",\"messages\":[{\"role\":\"user\",\"content\":\"benchmark me please\"}]}"
  "responses-wire|/v1/chat/completions|{\"model\":\"o1-pro\",\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"benchmark me please\"}]}"
)
declare -A LABEL=(
  [plain]="plain chat (default pipeline)"
  [gemini-in]="Gemini in, OpenAI upstream"
  [responses-in]="Responses in (stored), OpenAI up."
  [anthropic-in]="Anthropic in, OpenAI upstream"
  [anthropic-up]="OpenAI in, Anthropic upstream"
  [responses-wire]="OpenAI in, Responses upstream wire"
)

cat > "$T/mf.yaml" <<YAML
listen: 127.0.0.1:0
workers: 1
log_level: info
plugin_dir: $B/plugins
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
    config: { path: $T/access.log }
YAML


run_mf() {  # row name, path, body, requests -> total instructions
  local port; port=$(free_port)
  MANIFOLD_ADMIN_SOCKET="$T/admin.sock" \
    valgrind --tool=callgrind --callgrind-out-file="$T/$1.$4.out" \
    "$B/manifold" -c "$T/mf.yaml" --listen "127.0.0.1:$port" --workers 1 \
      >/dev/null 2>"$T/$1.$4.err" & local pid=$!
  wait_port "$port"
  python3 tests/bench/reqs.py "$port" "$4" "$2" "$3" || { cat "$T/$1.$4.err" >&2; kill -TERM "$pid"; return 1; }
  kill -TERM "$pid"; wait "$pid" || true
  total "$T/$1.$4.out"
}

per_req() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (b - a) / n }'; }
NG=$(per_req "$(nginx_instr "$N1" "$CHAT")" "$(nginx_instr "$N2" "$CHAT")" $((N2 - N1)))
echo "instructions per non-stream request (callgrind, ($N2 - $N1) requests, one worker, accesslog)"
printf "  %-36s %10s instr/req   1.00x\n" "nginx (1 worker, keepalive)" "$NG"
for row in "${ROWS[@]}"; do
  IFS='|' read -r name path body <<<"$row"
  a=$(run_mf "$name" "$path" "$body" "$N1")
  b=$(run_mf "$name" "$path" "$body" "$N2")
  n=$(per_req "$a" "$b" $((N2 - N1)))
  [ "$name" = plain ] && PLAIN=$n
  printf "  %-36s %10s instr/req   %s   %s of plain\n" "${LABEL[$name]}" "$n" \
    "$(awk -v a="$n" -v b="$NG" 'BEGIN { printf "%.2fx", a / b }')" \
    "$(awk -v a="$n" -v b="$PLAIN" 'BEGIN { printf "%.2fx", a / b }')"
  if [ -n "${MF_INSTR_PROFILES:-}" ]; then
    mkdir -p "$MF_INSTR_PROFILES"
    callgrind_annotate --inclusive=yes --threshold=99 "$T/$name.$N2.out" > "$MF_INSTR_PROFILES/$name.txt" 2>/dev/null || true
    cp "$T/$name.$N1.out" "$MF_INSTR_PROFILES/$name.$N1.callgrind"
    cp "$T/$name.$N2.out" "$MF_INSTR_PROFILES/$name.$N2.callgrind"
  fi
done
