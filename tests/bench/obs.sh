#!/usr/bin/env bash
# Observability's cost, in one run beside nginx: the same pipeline
# (accesslog) without and with the prometheus stage, and with the otel
# stage (exporting to an nginx that answers 200), interleaved, the median
# of three rounds each, with the range over the rounds and each round's
# difference to the pipeline without the stage; then the time to scrape
# 10,000 series. Pinned as
# run.sh: wrk on one core, the servers on the other. Nothing is asserted.
#   tests/bench/obs.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
D=${1:-10}
. tests/bench/obs-setup.sh
bench_pin
bench_mock
NGINX=$(free_port)
nginx_on nginx "$NGINX"
# the OTLP sink runs beside wrk: what the gateway's core pays is its own
obs_sink "$CLI"

gateway() {  # name, extra stages, extra top-level config
  obs_conf "$1" info "$2" "$3"
  $SRV build/manifold -c "$T/$1.yaml" 2> "$T/$1.err" & pids+=($!)
  echo $! > "$T/$1.pid"
  for _ in $(seq 50); do grep -q listening "$T/$1.err" && break; sleep 0.1; done
  sed -n 's/.*listening on [^:]*:\([0-9]*\).*/\1/p' "$T/$1.err" | head -1 > "$T/$1.port"
  sed -n 's/.*status listener on [^:]*:\([0-9]*\).*/\1/p' "$T/$1.err" | head -1 > "$T/$1.sport"
}
gateway base "" ""
gateway prom "$OBS_PROM" "$OBS_STATUS"
gateway otel "$(obs_otel)" ""
gateway series "  - name: prometheus
    plugin: prometheus
  - name: series
    lua: $PWD/tests/bench/series.lua" "status: { listen: 127.0.0.1:0, max_series: 20000 }"
BASE=$(cat "$T/base.port"); PROM=$(cat "$T/prom.port"); OTEL=$(cat "$T/otel.port")
SERIES=$(cat "$T/series.sport")
sleep 0.5

rps() {  # port
  $CLI wrk -t1 -c32 -d"${D}s" -s tests/bench/chat.lua "http://127.0.0.1:$1/v1/chat/completions" \
    | awk '/Requests\/sec/ {print $2}'
}
# CPU time of a process (all its threads: workers, writers, exporter), in
# clock ticks
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# microseconds of the gateway's CPU per request over one wrk run: what
# the stage costs, whatever the machine's other load does to req/s
cpu_per_req() {  # name
  local pid port t0 t1 n hz
  pid=$(cat "$T/$1.pid"); port=$(cat "$T/$1.port"); hz=$(getconf CLK_TCK)
  t0=$(ticks "$pid")
  n=$($CLI wrk -t1 -c32 -d"${D}s" -s tests/bench/chat.lua "http://127.0.0.1:$port/v1/chat/completions" \
      | awk '/requests in/ {print $1}')
  t1=$(ticks "$pid")
  awk -v a="$t0" -v b="$t1" -v n="$n" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz * 1e6 / n }'
}
median3() { printf "%s\n" "$@" | sort -g | sed -n 2p; }
range() { printf "%s\n" "$@" | sort -g | awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%s..%s", a, b }'; }
# each round's difference of a to b (lists in the same round order)
rounds() { paste <(printf "%s\n" $1) <(printf "%s\n" $2) | awk '{ printf "%s%+.1f%%", (NR > 1 ? " " : ""), ($1 / $2 - 1) * 100 }'; }
for port in $NGINX $BASE $PROM $OTEL; do rps "$port" >/dev/null; done   # warm up
declare -A RPS
for round in 1 2 3; do
  for name in NGINX BASE PROM OTEL; do RPS[$name]+="$(rps "${!name}") "; done
done
R_NGINX=$(median3 ${RPS[NGINX]}); R_BASE=$(median3 ${RPS[BASE]})
R_PROM=$(median3 ${RPS[PROM]}); R_OTEL=$(median3 ${RPS[OTEL]})
declare -A CPU
for round in 1 2 3; do
  for name in base prom otel; do CPU[$name]+="$(cpu_per_req "$name") "; done
done
C_BASE=$(median3 ${CPU[base]}); C_PROM=$(median3 ${CPU[prom]}); C_OTEL=$(median3 ${CPU[otel]})
# whether the exporter kept up (a full queue drops spans and says so)
DROPS=$(grep -c "spans dropped" "$T/otel.err" || true)

curl -sf "http://127.0.0.1:$SERIES/fill?n=10000" >/dev/null
NSERIES=$(curl -sf "http://127.0.0.1:$SERIES/metrics" | grep -c '^bench_series_total{')
SCRAPES=""
for i in 1 2 3 4 5; do
  SCRAPES+="$(curl -so /dev/null -w '%{time_total}' "http://127.0.0.1:$SERIES/metrics") "
done
SCRAPE=$(printf "%s\n" $SCRAPES | sort -g | sed -n 3p)
BYTES=$(curl -s "http://127.0.0.1:$SERIES/metrics" | wc -c)

pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
echo
echo "non-stream chat, 32 connections, 1 worker (median of 3 interleaved runs of ${D}s)"
printf "  %-40s %10s req/s   1.00x\n" "nginx (1 worker, keepalive)" "$R_NGINX"
printf "  %-40s %10s req/s   %s\n" "manifold, accesslog" "$R_BASE" "$(ratio "$R_BASE" "$R_NGINX")"
printf "  %-40s %10s req/s   %s   %s vs without (target >= -5%%)\n" "manifold, accesslog + prometheus" "$R_PROM" "$(ratio "$R_PROM" "$R_NGINX")" "$(pct "$R_PROM" "$R_BASE")"
printf "  %-40s %10s req/s   %s   %s vs without (target >= -10%%)\n" "manifold, accesslog + otel" "$R_OTEL" "$(ratio "$R_OTEL" "$R_NGINX")" "$(pct "$R_OTEL" "$R_BASE")"
echo "  rounds: nginx $(range ${RPS[NGINX]}), accesslog $(range ${RPS[BASE]}), + prometheus $(range ${RPS[PROM]}), + otel $(range ${RPS[OTEL]})"
echo "  each round vs without: prometheus $(rounds "${RPS[PROM]}" "${RPS[BASE]}"); otel $(rounds "${RPS[OTEL]}" "${RPS[BASE]}")"
echo "  otel: log lines about dropped spans: $DROPS"
echo "gateway CPU per request (all threads; median of 3 interleaved runs of ${D}s)"
printf "  %-40s %8s us\n" "manifold, accesslog" "$C_BASE"
printf "  %-40s %8s us   %s (target <= +5%%)\n" "manifold, accesslog + prometheus" "$C_PROM" "$(pct "$C_PROM" "$C_BASE")"
printf "  %-40s %8s us   %s (target <= +10%%)\n" "manifold, accesslog + otel" "$C_OTEL" "$(pct "$C_OTEL" "$C_BASE")"
echo "  rounds: accesslog $(range ${CPU[base]}), + prometheus $(range ${CPU[prom]}), + otel $(range ${CPU[otel]}) us"
echo "scrape of the status listener's /metrics"
awk -v s="$SCRAPE" -v n="$NSERIES" -v b="$BYTES" 'BEGIN { printf "  %d series of one metric (+ the stage'"'"'s own), %d bytes: %.1f ms (median of 5; target < 50 ms)\n", n, b, s * 1000 }'
