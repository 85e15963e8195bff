#!/usr/bin/env bash
# Instructions per request of the observability stages, counted by
# valgrind's callgrind: one worker, the same pipeline (accesslog) without
# and with the prometheus stage (and the status listener), and with the
# otel stage exporting every request's spans to an nginx that answers
# 200. Each is run over N1 and N2 sequential keep-alive requests;
# (total(N2) - total(N1)) / (N2 - N1) cancels start-up and shutdown.
# Counted for the worker thread (what req/s pays) and for all threads
# (the log writer and the exporter included; not the main thread). The count does not drift
# with the machine's load, as req/s does.
#   tests/bench/obs-instr.sh [N1 N2]     (default 200 1200)
# Expects build/ to be built and valgrind installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${1:-200}
N2=${2:-1200}
T=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$T"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq "${2:-300}"); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
BODY='{"model":"gpt-4.1","messages":[{"role":"user","content":"benchmark me please"}]}'

build/tests/mock/mf-mock --port 0 > "$T/mock.port" & pids+=($!)
for _ in $(seq 50); do [ -s "$T/mock.port" ] && break; sleep 0.1; done
MOCK=$(head -1 "$T/mock.port")
SINK=$(free_port)
mkdir -p "$T/sink"
cat > "$T/sink.conf" <<NGX
worker_processes 1;
pid $T/sink/nginx.pid;
error_log $T/sink/error.log;
events { worker_connections 256; }
http { access_log off; client_body_temp_path $T/sink;
  server { listen 127.0.0.1:$SINK; location / { return 200 "{}"; } } }
NGX
nginx -c "$T/sink.conf" -p "$T/sink" -g 'daemon off;' & pids+=($!)

conf() {  # name, extra stages, extra top-level config
  cat > "$T/$1.yaml" <<YAML
listen: 127.0.0.1:0
workers: 1
log_level: warn
plugin_dir: $PWD/build/plugins
providers:
  - name: openai
    type: openai
    base_url: http://127.0.0.1:$MOCK/v1
    keys: ["sk-bench-0123456789abcdef"]
    models: ["gpt-*"]
prices:
  gpt-4.1: { input: 2, output: 8 }
stages:
$2
  - name: accesslog
    plugin: accesslog
    config: { path: $T/$1-access.log }
$3
YAML
}
conf base "" ""
conf prom "  - name: prometheus
    plugin: prometheus" "status: { listen: 127.0.0.1:0 }"
conf otel "  - name: otel
    plugin: otel
    config: { endpoint: \"http://127.0.0.1:$SINK/v1/traces\", flush_ms: 100 }" ""

# requests -> "worker all": the instructions of the thread that ran the
# most but the main thread (thread 1, whose stop is counted too: it
# cancels out), that is the worker, and of all threads, counting from
# the port's opening
run() {  # name, requests
  local port out; port=$(free_port); out="$T/$1.$2"
  valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
    --callgrind-out-file="$out" \
    build/manifold -c "$T/$1.yaml" --listen "127.0.0.1:$port" \
      --workers 1 >/dev/null 2>"$out.err" & local pid=$!
  wait_port "$port" || { cat "$out.err" >&2; return 1; }
  callgrind_control -i on "$pid" >/dev/null 2>&1
  python3 tests/bench/reqs.py "$port" "$2" /v1/chat/completions "$BODY"
  kill -TERM "$pid"; wait "$pid" || true
  for f in "$out"-*; do
    printf "%s " "${f##*-}"; grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}'
  done | awk '$1 != "01" { s += $2; if ($2 > m) m = $2 } END { print m, s }'
}
per_req() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (b - a) / n }'; }
declare -A W A
for name in base prom otel; do
  read -r w1 a1 < <(run "$name" "$N1")
  read -r w2 a2 < <(run "$name" "$N2")
  W[$name]=$(per_req "$w1" "$w2" $((N2 - N1)))
  A[$name]=$(per_req "$a1" "$a2" $((N2 - N1)))
done
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }'; }
echo "instructions per non-stream request (callgrind, $N2 - $N1 requests, 1 worker)"
printf "  %-34s %10s %10s\n" "" "worker" "all threads"
printf "  %-34s %10s %10s\n" "accesslog" "${W[base]}" "${A[base]}"
printf "  %-34s %10s %10s   %s / %s (target +5%%)\n" "accesslog + prometheus" "${W[prom]}" "${A[prom]}" \
  "$(pct "${W[prom]}" "${W[base]}")" "$(pct "${A[prom]}" "${A[base]}")"
printf "  %-34s %10s %10s   %s / %s (target +10%%)\n" "accesslog + otel" "${W[otel]}" "${A[otel]}" \
  "$(pct "${W[otel]}" "${W[base]}")" "$(pct "${A[otel]}" "${A[base]}")"
