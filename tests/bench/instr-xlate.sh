#!/usr/bin/env bash
# Instructions per request of the translating paths and of the answers
# the gateway gives itself, counted by valgrind's callgrind as instr.sh
# counts the plain ones: nginx and Manifold (one worker, accesslog, the
# providers of run.sh on the same mock) each run twice, over N1 and N2
# sequential keep-alive requests, and (total(N2) - total(N1)) / (N2 - N1)
# cancels start-up and shutdown. Each row is set beside its nginx
# yardstick, as in xlate.sh: the plain chat proxied (non-stream rows, the
# estimates, the gzip row), the chat streamed with the mock's answer fixed
# at four content events (the streamed rows; proxy_buffering off),
# OpenAI embeddings of one and two inputs (the Gemini embedding rows),
# and a static file holding the gateway's own answer (the model lists).
# Rows (MF_XLATE_ROWS="name ..." picks some, default all): as xlate.sh's.
# The count does not drift with the machine's load. A full run (21 rows,
# 8 yardsticks, 58 runs under callgrind) takes about 10 minutes on an
# idle machine.
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
P='benchmark me please [[mock:chunks=4]]'
STREAM="{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"$P\"}]}"
GEMINI="{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"benchmark me please\"}]}],\"generationConfig\":{\"maxOutputTokens\":100}}"
GEMINI_S="{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"$P\"}]}],\"generationConfig\":{\"maxOutputTokens\":100}}"
AV="--header anthropic-version:2023-06-01"
# yardstick | path | body | reqs.py flags: what nginx does beside the rows
declare -A YARD=(
  [chat]="/v1/chat/completions|$CHAT|"
  [stream]="/v1/chat/completions|$STREAM|"
  [embed]="/v1/embeddings|{\"model\":\"text-embedding-3-small\",\"input\":\"benchmark me please\"}|"
  [embed2]="/v1/embeddings|{\"model\":\"text-embedding-3-small\",\"input\":[\"benchmark me please\",\"and me too\"]}|"
  [st-gemini-models]="/static/v1beta-models.json||--get"
  [st-models]="/static/v1-models.json||--get"
  [st-models-anthropic]="/static/v1-models-anthropic.json||--get"
  [st-models-retrieve]="/static/v1-models-gpt-4o.json||--get"
)
# name | path | body | reqs.py flags | yardstick | label: the bodies of tests/bench/*.lua
ALL_ROWS=(
  "plain|/v1/chat/completions|$CHAT||chat|plain chat (default pipeline)"
  "gemini-in|/v1beta/models/gpt-4o:generateContent|$GEMINI||chat|Gemini in, OpenAI upstream"
  "responses-in|/v1/responses|{\"model\":\"gpt-4o\",\"max_output_tokens\":100,\"input\":\"benchmark me please\"}||chat|Responses in (stored), OpenAI up."
  "anthropic-in|/v1/messages|{\"model\":\"gpt-4o\",\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"benchmark me please\"}]}||chat|Anthropic in, OpenAI upstream"
  "anthropic-up|/v1/chat/completions|{\"model\":\"claude-sonnet-4\",\"messages\":[{\"role\":\"user\",\"content\":\"benchmark me please\"}]}||chat|OpenAI in, Anthropic upstream"
  "responses-wire|/v1/chat/completions|{\"model\":\"o1-pro\",\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"benchmark me please\"}]}||chat|OpenAI in, Responses upstream wire"
  "plain-stream|/v1/chat/completions|$STREAM||stream|plain chat, stream"
  "responses-stream|/v1/responses|{\"model\":\"gpt-4o\",\"max_output_tokens\":100,\"stream\":true,\"input\":\"$P\"}||stream|Responses in, stream (stored)"
  "anthropic-stream|/v1/messages|{\"model\":\"gpt-4o\",\"max_tokens\":100,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"$P\"}]}|$AV|stream|Anthropic in, stream"
  "gemini-stream-sse|/v1beta/models/gpt-4o:streamGenerateContent?alt=sse|$GEMINI_S||stream|Gemini streamGenerateContent?alt=sse"
  "gemini-stream|/v1beta/models/gpt-4o:streamGenerateContent|$GEMINI_S||stream|Gemini streamGenerateContent (array)"
  "gemini-embed|/v1beta/models/text-embedding-3-small:embedContent|{\"content\":{\"parts\":[{\"text\":\"benchmark me please\"}]}}||embed|Gemini embedContent"
  "gemini-batch-embed|/v1beta/models/text-embedding-3-small:batchEmbedContents|{\"requests\":[{\"model\":\"models/text-embedding-3-small\",\"content\":{\"parts\":[{\"text\":\"benchmark me please\"}]}},{\"model\":\"models/text-embedding-3-small\",\"content\":{\"parts\":[{\"text\":\"and me too\"}]}}]}||embed2|Gemini batchEmbedContents (2)"
  "gemini-count|/v1beta/models/gpt-4o:countTokens|{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"benchmark me please\"}]}]}||chat|Gemini countTokens (estimate)"
  "count-tokens-est|/v1/messages/count_tokens|{\"model\":\"gpt-4o\",\"system\":\"be brief\",\"messages\":[{\"role\":\"user\",\"content\":\"benchmark me please\"}]}|$AV|chat|Anthropic count_tokens (estimate)"
  "count-tokens-fwd|/v1/messages/count_tokens|{\"model\":\"claude-sonnet-4\",\"system\":\"be brief\",\"messages\":[{\"role\":\"user\",\"content\":\"benchmark me please\"}]}|$AV|chat|Anthropic count_tokens (forwarded)"
  "gemini-models|/v1beta/models||--get|st-gemini-models|GET /v1beta/models"
  "models|/v1/models||--get|st-models|GET /v1/models"
  "models-anthropic|/v1/models||--get $AV|st-models-anthropic|GET /v1/models, anthropic-version"
  "models-retrieve|/v1/models/gpt-4o||--get|st-models-retrieve|GET /v1/models/gpt-4o"
  "gzip|/v1/chat/completions|$CHAT|--gzip|chat|plain chat, Content-Encoding: gzip"
)
ROWS=()
for r in "${ALL_ROWS[@]}"; do
  name=${r%%|*}
  if [ -z "${MF_XLATE_ROWS:-}" ] || [[ " $MF_XLATE_ROWS " == *" $name "* ]]; then ROWS+=("$r"); fi
done
[ "${#ROWS[@]}" -gt 0 ] || { echo "no row in MF_XLATE_ROWS=$MF_XLATE_ROWS" >&2; exit 2; }

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
    models: ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "gpt-*", "text-embedding-*"]
  - name: anthropic
    type: anthropic
    base_url: http://127.0.0.1:$MOCK
    keys: ["sk-ant-bench-0123456789"]
    models: ["claude-sonnet-4", "claude-opus-4", "claude-*"]
  - name: openai-responses
    type: openai
    base_url: http://127.0.0.1:$MOCK/v1
    keys: ["sk-bench-0123456789abcdef"]
    models: ["o1-pro", "o1-*"]
    options: { wire: responses }
stages:
  - name: accesslog
    plugin: accesslog
    config: { path: $T/access.log }
YAML


# the model lists' yardsticks: the gateway's answers (a run outside
# callgrind), as nginx's files
mkdir -p "$T/static"; chmod a+rx "$T" "$T/static"   # nginx's worker may be another user
port=$(free_port)
"$B/manifold" -c "$T/mf.yaml" --listen "127.0.0.1:$port" --workers 1 >/dev/null 2>"$T/static.err" & spid=$!
wait_port "$port"
curl -sf "http://127.0.0.1:$port/v1beta/models" > "$T/static/v1beta-models.json"
curl -sf "http://127.0.0.1:$port/v1/models" > "$T/static/v1-models.json"
curl -sf -H 'anthropic-version: 2023-06-01' "http://127.0.0.1:$port/v1/models" > "$T/static/v1-models-anthropic.json"
curl -sf "http://127.0.0.1:$port/v1/models/gpt-4o" > "$T/static/v1-models-gpt-4o.json"
kill -TERM "$spid"; wait "$spid" || true

run_mf() {  # row name, path, body, flags, requests -> total instructions
  local port; port=$(free_port)
  MANIFOLD_ADMIN_SOCKET="$T/admin.sock" \
    valgrind --tool=callgrind --callgrind-out-file="$T/$1.$5.out" \
    "$B/manifold" -c "$T/mf.yaml" --listen "127.0.0.1:$port" --workers 1 \
      >/dev/null 2>"$T/$1.$5.err" & local pid=$!
  wait_port "$port"
  # shellcheck disable=SC2086 # the flags are words
  python3 tests/bench/reqs.py "$port" "$5" "$2" "$3" $4 || { cat "$T/$1.$5.err" >&2; kill -TERM "$pid"; return 1; }
  kill -TERM "$pid"; wait "$pid" || true
  total "$T/$1.$5.out"
}

per_req() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (b - a) / n }'; }
declare -A NG
ng() {  # yardstick -> instructions per request, counted once
  if [ -z "${NG[$1]:-}" ]; then
    local path body flags
    IFS='|' read -r path body flags <<<"${YARD[$1]}"
    # shellcheck disable=SC2086
    NG[$1]=$(per_req "$(nginx_instr "$N1" "$body" "$path" $flags)" "$(nginx_instr "$N2" "$body" "$path" $flags)" $((N2 - N1)))
  fi
}
echo "instructions per request (callgrind, ($N2 - $N1) requests, one worker, accesslog), beside the row's nginx yardstick"
PLAIN=""
for row in "${ROWS[@]}"; do
  IFS='|' read -r name path body flags y label <<<"$row"
  ng "$y"
  a=$(run_mf "$name" "$path" "$body" "$flags" "$N1")
  b=$(run_mf "$name" "$path" "$body" "$flags" "$N2")
  n=$(per_req "$a" "$b" $((N2 - N1)))
  [ "$name" = plain ] && PLAIN=$n
  printf "  %-38s %9s instr/req   nginx %-19s %8s   %s%s\n" "$label" "$n" "$y" "${NG[$y]}" \
    "$(awk -v a="$n" -v b="${NG[$y]}" 'BEGIN { printf "%.2fx", a / b }')" \
    "$( [ -n "$PLAIN" ] && awk -v a="$n" -v b="$PLAIN" 'BEGIN { printf "   %.2fx of plain", a / b }')"
  if [ -n "${MF_INSTR_PROFILES:-}" ]; then
    mkdir -p "$MF_INSTR_PROFILES"
    callgrind_annotate --inclusive=yes --threshold=99 "$T/$name.$N2.out" > "$MF_INSTR_PROFILES/$name.txt" 2>/dev/null || true
    cp "$T/$name.$N1.out" "$MF_INSTR_PROFILES/$name.$N1.callgrind"
    cp "$T/$name.$N2.out" "$MF_INSTR_PROFILES/$name.$N2.callgrind"
  fi
done
