#!/usr/bin/env bash
# What response_store.db costs a Responses request, by thread: the
# Responses row of instr-xlate.sh (each answer stored) with the store in
# memory only and with its file, under callgrind with one file per thread
# (--separate-threads), over N1 and N2 sequential keep-alive requests;
# (count(N2) - count(N1)) / (N2 - N1) per thread. The worker thread is the
# one that ran mf_req_handle, the store's writer the one that ran
# mf_respstore_peek; "process" is every thread (main, log, accesslog, ...).
#   tests/bench/instr-respdb.sh [N1 N2]   (default 200 1200)
# MF_BUILD=DIR counts another build's gateway (default build/).
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${1:-200}
N2=${2:-1200}
B=$(cd "${MF_BUILD:-build}" && pwd)
source tests/bench/lib.sh
bench_mock "$B"
BODY='{"model":"gpt-4o","max_output_tokens":100,"input":"benchmark me please"}'

conf() {  # name, db value -> $T/<name>.yaml
  cat > "$T/$1.yaml" <<YAML
listen: 127.0.0.1:0
workers: 1
log_level: info
plugin_dir: $B/plugins
response_store: { db: $2 }
providers:
  - name: openai
    type: openai
    base_url: http://127.0.0.1:$MOCK/v1
    keys: ["sk-bench-0123456789abcdef"]
    models: ["gpt-*"]
stages:
  - name: accesslog
    plugin: accesslog
    config: { path: $T/access.log }
YAML
}

# config name, requests -> "worker writer process" instructions
run() {
  local port out; port=$(free_port); out="$T/$1.$2.out"
  rm -f "$T/responses.db"*
  MANIFOLD_ADMIN_SOCKET="$T/admin.sock" \
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out" \
    "$B/manifold" -c "$T/$1.yaml" --listen "127.0.0.1:$port" --workers 1 \
      >/dev/null 2>"$T/$1.$2.err" & local pid=$!
  wait_port "$port" || { cat "$T/$1.$2.err" >&2; return 1; }
  python3 tests/bench/reqs.py "$port" "$2" /v1/responses "$BODY" || { cat "$T/$1.$2.err" >&2; kill -TERM "$pid"; return 1; }
  kill -TERM "$pid"; wait "$pid" || true
  local worker=0 writer=0 all=0 f n
  for f in "$out"-*; do
    n=$(total "$f"); all=$((all + n))
    if grep -q 'mf_req_handle' "$f"; then worker=$((worker + n)); fi
    if grep -q 'mf_respstore_peek' "$f"; then writer=$((writer + n)); fi
  done
  echo "$worker $writer $all"
}

per_req() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (b - a) / n }'; }
conf memory none
conf file responses.db
echo "instructions per Responses request (stored), callgrind, ($N2 - $N1) requests, one worker"
printf "  %-26s %12s %12s %12s\n" "response_store" "worker" "writer" "process"
for db in memory file; do
  o1=$(run "$db" "$N1"); o2=$(run "$db" "$N2")
  read -r w1 r1 a1 <<<"$o1"
  read -r w2 r2 a2 <<<"$o2"
  [ "$w1" -gt 0 ] && [ "$w2" -gt 0 ] || { echo "no worker thread counted" >&2; exit 1; }
  printf "  %-26s %12s %12s %12s\n" "$db" "$(per_req "$w1" "$w2" $((N2 - N1)))" \
      "$(per_req "$r1" "$r2" $((N2 - N1)))" "$(per_req "$a1" "$a2" $((N2 - N1)))"
done
