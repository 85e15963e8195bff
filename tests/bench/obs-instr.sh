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
# "otel full" is the otel stage with detail: full; nginx proxying to the
# mock is counted in the same run. RUNS picks the configurations (default
# all: nginx base prom otel full).
#   [RUNS="base otel"] tests/bench/obs-instr.sh [N1 N2]     (default 200 1200)
# Expects build/ to be built and valgrind installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${1:-200}
N2=${2:-1200}
. tests/bench/obs-setup.sh
BODY='{"model":"gpt-4.1","messages":[{"role":"user","content":"benchmark me please"}]}'

bench_mock
obs_sink ""
obs_conf base warn "" ""
obs_conf prom warn "$OBS_PROM" "$OBS_STATUS"
obs_conf otel warn "$(obs_otel ", flush_ms: 100")" ""
obs_conf full warn "$(obs_otel ", flush_ms: 100, detail: full")" ""

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
RUNS=${RUNS:-nginx base prom otel full}
declare -A W A
for name in $RUNS; do
  if [ "$name" = nginx ]; then
    NG=$(per_req "$(nginx_instr "$N1" "$BODY")" "$(nginx_instr "$N2" "$BODY")" $((N2 - N1)))
    continue
  fi
  read -r w1 a1 < <(run "$name" "$N1")
  read -r w2 a2 < <(run "$name" "$N2")
  W[$name]=$(per_req "$w1" "$w2" $((N2 - N1)))
  A[$name]=$(per_req "$a1" "$a2" $((N2 - N1)))
done
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }'; }
declare -A LABEL=([base]="accesslog" [prom]="accesslog + prometheus"
  [otel]="accesslog + otel" [full]="accesslog + otel, detail: full")
declare -A TARGET=([prom]="+5%" [otel]="+10%" [full]="+10%")
x_nginx() { [ -z "${NG:-}" ] || awk -v a="$1" -v n="$NG" 'BEGIN { printf "%.2fx nginx", a / n }'; }
echo "instructions per non-stream request (callgrind, $N2 - $N1 requests, 1 worker)"
printf "  %-34s %10s %10s\n" "" "worker" "all threads"
[ -z "${NG:-}" ] || printf "  %-34s %10s %10s   1.00x nginx\n" "nginx (1 worker, keepalive)" "$NG" "$NG"
for name in $RUNS; do
  [ "$name" != nginx ] || continue
  if [ "$name" = base ] || [ -z "${W[base]:-}" ]; then
    printf "  %-34s %10s %10s   %s\n" "${LABEL[$name]}" "${W[$name]}" "${A[$name]}" "$(x_nginx "${A[$name]}")"
  else
    printf "  %-34s %10s %10s   %s   %s / %s (target %s)\n" "${LABEL[$name]}" "${W[$name]}" "${A[$name]}" \
      "$(x_nginx "${A[$name]}")" "$(pct "${W[$name]}" "${W[base]}")" "$(pct "${A[$name]}" "${A[base]}")" "${TARGET[$name]}"
  fi
done
