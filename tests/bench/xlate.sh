#!/usr/bin/env bash
# Requests per second of the translating paths and of the answers the
# gateway gives itself, beside nginx, pinned as run.sh pins them (the mock,
# nginx and the gateway on one core, wrk on the other), in interleaved
# rounds; in each round each row runs right after its nginx yardstick and
# its ratio is taken to that run, and the range of the ratio over the
# rounds is printed with the median. The
# yardsticks (nginx, 1 worker, keep-alive to the same mock): the plain
# non-stream chat proxied (non-stream rows, the local answers and the gzip
# row); the same chat streamed, the mock's answer fixed at four content
# events and the usage chunk (the streamed rows: the gateway asks the mock
# for exactly that stream; nginx has proxy_buffering off); OpenAI
# embeddings of one and of two inputs (:embedContent, :batchEmbedContents:
# what the gateway sends upstream); and for the model lists, which the
# gateway answers from its config, a static file holding the gateway's own
# answer byte for byte (nginx's cheapest answer of the same size).
# Rows (MF_XLATE_ROWS="name ..." picks some, default all):
#   plain, gemini-in, responses-in, anthropic-in, anthropic-up,
#   responses-wire (non-stream, as before); plain-stream (OpenAI chat
#   streamed, untranslated: the streamed rows' baseline), responses-stream,
#   anthropic-stream, gemini-stream-sse, gemini-stream (streamed);
#   gemini-embed, gemini-batch-embed; gemini-count, count-tokens-est (the
#   gateway's estimate), count-tokens-fwd (forwarded to the anthropic
#   provider); gemini-models, models, models-anthropic, models-retrieve
#   (GET, from the config); gzip (plain chat, body gzip'd).
# With a second build directory, its gateway runs beside this one's in the
# same rounds (an A/B). A full run (21 rows) takes about
# 42 x seconds x rounds + 30 seconds: 11 minutes with 5 s and 3 rounds.
#   tests/bench/xlate.sh [seconds per run, default 5] [rounds, default 3] [other build dir]
# Expects build/ to be built.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-5}
ROUNDS=${2:-3}
OTHER=${3:-}
source tests/bench/lib.sh
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
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

# the model lists' yardsticks: the gateway's answers, as nginx's files
mkdir -p "$T/static"; chmod a+rx "$T" "$T/static"   # nginx's worker may be another user
MFPORT=$(cat "$T/mf.port")
curl -sf "http://127.0.0.1:$MFPORT/v1beta/models" > "$T/static/v1beta-models.json"
curl -sf "http://127.0.0.1:$MFPORT/v1/models" > "$T/static/v1-models.json"
curl -sf -H 'anthropic-version: 2023-06-01' "http://127.0.0.1:$MFPORT/v1/models" > "$T/static/v1-models-anthropic.json"
curl -sf "http://127.0.0.1:$MFPORT/v1/models/gpt-4o" > "$T/static/v1-models-gpt-4o.json"
export MF_GZIP_BODY="$T/chat.json.gz"
printf '%s' '{"model":"gpt-4o","messages":[{"role":"user","content":"benchmark me please"}]}' | gzip -n > "$MF_GZIP_BODY"

rps() {  # port, wrk script[, path]: req/s (a run with answers not 2xx fails)
  local out
  out=$($CLI wrk -t1 -c32 -d"${D}s" -s "tests/bench/$2" "http://127.0.0.1:$1${3:-/v1/chat/completions}")
  if grep -q 'Non-2xx' <<<"$out"; then echo "$2 on port $1: $out" >&2; exit 1; fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}
# yardstick name -> "wrk script path" on nginx
declare -A YARD=(
  [chat]="chat.lua /v1/chat/completions"
  [stream]="chat-stream.lua /v1/chat/completions"
  [embed]="embed.lua /v1/embeddings"
  [embed2]="embed2.lua /v1/embeddings"
  [st-gemini-models]="get.lua /static/v1beta-models.json"
  [st-models]="get.lua /static/v1-models.json"
  [st-models-anthropic]="get.lua /static/v1-models-anthropic.json"
  [st-models-retrieve]="get.lua /static/v1-models-gpt-4o.json"
)
declare -A YLABEL=(
  [chat]="nginx, chat proxied"
  [stream]="nginx, chat stream proxied"
  [embed]="nginx, embeddings (1) proxied"
  [embed2]="nginx, embeddings (2) proxied"
  [st-gemini-models]="nginx, static file"
  [st-models]="nginx, static file"
  [st-models-anthropic]="nginx, static file"
  [st-models-retrieve]="nginx, static file"
)
# row: name | wrk script | yardstick | label
ALL_ROWS=(
  "plain|chat.lua|chat|plain chat"
  "gemini-in|gemini-in.lua|chat|Gemini in, OpenAI upstream"
  "responses-in|responses.lua|chat|Responses in (stored), OpenAI up."
  "anthropic-in|messages.lua|chat|Anthropic in, OpenAI upstream"
  "anthropic-up|chat-claude.lua|chat|OpenAI in, Anthropic upstream"
  "responses-wire|chat-responses-wire.lua|chat|OpenAI in, Responses upstream wire"
  "plain-stream|chat-stream.lua|stream|plain chat, stream"
  "responses-stream|responses-stream.lua|stream|Responses in, stream (stored)"
  "anthropic-stream|messages-stream.lua|stream|Anthropic in, stream"
  "gemini-stream-sse|gemini-stream-sse.lua|stream|Gemini streamGenerateContent?alt=sse"
  "gemini-stream|gemini-stream.lua|stream|Gemini streamGenerateContent (array)"
  "gemini-embed|gemini-embed.lua|embed|Gemini embedContent"
  "gemini-batch-embed|gemini-batch-embed.lua|embed2|Gemini batchEmbedContents (2)"
  "gemini-count|gemini-count.lua|chat|Gemini countTokens (estimate)"
  "count-tokens-est|count-tokens-est.lua|chat|Anthropic count_tokens (estimate)"
  "count-tokens-fwd|count-tokens.lua|chat|Anthropic count_tokens (forwarded)"
  "gemini-models|gemini-models.lua|st-gemini-models|GET /v1beta/models"
  "models|models.lua|st-models|GET /v1/models"
  "models-anthropic|models-anthropic.lua|st-models-anthropic|GET /v1/models, anthropic-version"
  "models-retrieve|models-retrieve.lua|st-models-retrieve|GET /v1/models/gpt-4o"
  "gzip|chat-gzip.lua|chat|plain chat, Content-Encoding: gzip"
)
ROWS=()
for r in "${ALL_ROWS[@]}"; do
  name=${r%%|*}
  if [ -z "${MF_XLATE_ROWS:-}" ] || [[ " $MF_XLATE_ROWS " == *" $name "* ]]; then ROWS+=("$r"); fi
done
[ "${#ROWS[@]}" -gt 0 ] || { echo "no row in MF_XLATE_ROWS=$MF_XLATE_ROWS" >&2; exit 2; }
YARDS=()
for r in "${ROWS[@]}"; do
  IFS='|' read -r _ _ y _ <<<"$r"
  [[ " ${YARDS[*]} " == *" $y "* ]] || YARDS+=("$y")
done
for y in "${YARDS[@]}"; do D=1 rps "$NGINX" ${YARD[$y]} >/dev/null; done   # warm up
for g in "${GWS[@]}"; do for r in "${ROWS[@]}"; do
  IFS='|' read -r _ s _ _ <<<"$r"; D=1 rps "$(cat "$T/$g.port")" "$s" >/dev/null
done; done
declare -A RATIOS RPS NG
for round in $(seq "$ROUNDS"); do
  for r in "${ROWS[@]}"; do
    IFS='|' read -r name s y _ <<<"$r"
    # the yardstick right before its row: the machine's load moves
    # within a round of many rows, much less within one pair of runs
    n=$(rps "$NGINX" ${YARD[$y]}); NG[$y]+="$n "
    for g in "${GWS[@]}"; do
      v=$(rps "$(cat "$T/$g.port")" "$s")
      RPS[$g.$name]+="$v "
      RATIOS[$g.$name]+="$(awk -v a="$v" -v b="$n" 'BEGIN { printf "%.2f", a / b }') "
    done
  done
done
median() { printf "%s\n" "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
range() { printf "%s\n" "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2fx-%.2fx", lo, hi }'; }
echo "32 connections, $ROUNDS interleaved rounds of ${D}s (each row right after its nginx yardstick, the ratio to that run); load average $LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
for y in "${YARDS[@]}"; do
  printf "  %-38s %-8s %9s req/s (median)  [%s]\n" "${YLABEL[$y]}" "" "$(median ${NG[$y]})" "$y"
done
for r in "${ROWS[@]}"; do
  IFS='|' read -r name _ y label <<<"$r"
  for g in "${GWS[@]}"; do
    m=$(median ${RATIOS[$g.$name]})
    printf "  %-38s %-8s %9s req/s   %s (median %sx) vs %s%s\n" "$label" "$g" \
      "$(median ${RPS[$g.$name]})" "$(range ${RATIOS[$g.$name]})" "$m" "$y" \
      "$(awk -v m="$m" 'BEGIN { if (m < 0.5) print "   UNDER 0.5x" }')"
  done
done
