#!/usr/bin/env bash
# The mask stage's cost (issue: at most 15% of req/s on a 2 KB prompt
# against the same pipeline without it). Instructions per non-stream
# request counted by callgrind (one worker; (N2 - N1) sequential
# keep-alive requests, so start-up and shutdown cancel out) for four
# cases: the 2 KB support ticket of chat-2k.lua (an e-mail address, a
# phone number and a card number: placeholders made and restored in the
# echoed answer) and chat-2k-clean.lua (nothing to find), each without
# and with `mask`; then req/s by wrk (D seconds each, the gateway pinned
# to one core, wrk on the other) for the same four, as a cross-check
# (req/s on a shared machine swings; the instruction count does not).
# nginx proxying the same 2 KB body is counted in the same run, as the
# reference row. MASK_KEEP=dir keeps the callgrind outputs there (for
# callgrind_annotate --inclusive=yes).
# R rounds of the four wrk runs (default 1), each round plain and mask
# in turn, so the machine's load drifts over both alike; each round's
# ratios are printed, then their range.
# MASK_TTFT=N: then N streams through each (alternating, the two
# gateways pinned to one core), the time to the first content event, for
# the clean body (nothing to restore: no hold-back expected) and the PII
# one (its placeholders restored in the stream).
#   tests/bench/mask.sh [N1 N2 [D [R]]]   (default 200 1200 5 1; D=0: no wrk)
# Expects build/ to be built (RelWithDebInfo) and valgrind installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${1:-200}
N2=${2:-1200}
D=${3:-5}
R=${4:-1}
source tests/bench/lib.sh
keep() { [ -z "${MASK_KEEP:-}" ] || { mkdir -p "$MASK_KEEP"; cp "$1" "$MASK_KEEP/"; }; }
body_of() { sed -n "s/^wrk.body = '\\(.*\\)'\$/\\1/p" "tests/bench/$1"; }
PII=$(body_of chat-2k.lua)
CLEAN=$(body_of chat-2k-clean.lua)
[ -n "$PII" ] && [ -n "$CLEAN" ] || { echo "no body in the wrk scripts" >&2; exit 1; }

bench_mock  # not pinned: the instruction counts run first
bench_pin

config() {  # name, with mask (0/1)
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
YAML
  if [ "$2" = 1 ]; then
    printf 'stages:\n  - name: mask\n    plugin: mask\n' >> "$T/$1.yaml"
  fi
}
config plain 0
config mask 1


instr() {  # config, body, requests -> total instructions
  local port; port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$T/$1.$3.out" \
    build/manifold -c "$T/$1.yaml" --listen "127.0.0.1:$port" --workers 1 \
      >/dev/null 2>"$T/$1.$3.err" & local pid=$!
  wait_port "$port"
  python3 tests/bench/reqs.py "$port" "$3" /v1/chat/completions "$2"
  kill -TERM "$pid"; wait "$pid" || true
  keep "$T/$1.$3.out"
  total "$T/$1.$3.out"
}

per_req() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (b - a) / n }'; }
row() {  # label, config, body
  per_req "$(instr "$2" "$3" "$N1")" "$(instr "$2" "$3" "$N2")" $((N2 - N1))
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rps() {  # config, wrk script -> "req/s us-of-CPU-per-request"
  local port; port=$(free_port)
  $SRV build/manifold -c "$T/$1.yaml" --listen "127.0.0.1:$port" --workers 1 \
    >/dev/null 2>"$T/$1.wrk.err" & local pid=$!
  wait_port "$port"
  $CLI wrk -t1 -c16 -d1s -s "tests/bench/$2" "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
  local t0; t0=$(cpu_ticks "$pid")
  $CLI wrk -t1 -c16 -d"${D}s" -s "tests/bench/$2" "http://127.0.0.1:$port/v1/chat/completions" > "$T/wrk.out"
  local t1; t1=$(cpu_ticks "$pid")
  awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" '
    / requests in / { n = $1 }
    /Requests\/sec/ { r = int($2) }
    END { printf "%d %.1f", r, n ? t / hz * 1e6 / n : 0 }' "$T/wrk.out"
  kill -TERM "$pid"; wait "$pid" || true
}

IC=$(row clean plain "$CLEAN"); ICM=$(row clean mask "$CLEAN")
IP=$(row pii plain "$PII"); IPM=$(row pii mask "$PII")
ING=$(per_req "$(nginx_instr "$N1" "$PII")" "$(nginx_instr "$N2" "$PII")" $((N2 - N1)))
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
echo "mask stage, 2 KB prompt, instructions per non-stream request (callgrind, $((N2 - N1)) requests)"
printf "  %-28s %10s without  %10s with mask   cost %s\n" "nothing to find" "$IC" "$ICM" "$(ratio "$ICM" "$IC")"
printf "  %-28s %10s without  %10s with mask   cost %s\n" "e-mail, phone, card" "$IP" "$IPM" "$(ratio "$IPM" "$IP")"
printf "  %-28s %10s (nginx proxying the same body)\n" "nginx, e-mail, phone, card" "$ING"
if [ "$D" != 0 ]; then
  # the gateway's CPU time (user + system) per request is what bounds its
  # req/s; req/s itself swings with the other load on a shared machine
  echo "wrk -c16, ${D}s, the gateway on one core: req/s, and its CPU time per request"
  rc=""; rp=""
  for round in $(seq "$R"); do
    read -r RC CC <<< "$(rps plain chat-2k-clean.lua)"; read -r RCM CCM <<< "$(rps mask chat-2k-clean.lua)"
    read -r RP CP <<< "$(rps plain chat-2k.lua)"; read -r RPM CPM <<< "$(rps mask chat-2k.lua)"
    [ "$R" = 1 ] || echo "  round $round"
    printf "  %-22s %6s req/s %7s us  without | %6s req/s %7s us  with mask | req/s bound by CPU: %s\n" \
      "nothing to find" "$RC" "$CC" "$RCM" "$CCM" "$(ratio "$CC" "$CCM")"
    printf "  %-22s %6s req/s %7s us  without | %6s req/s %7s us  with mask | req/s bound by CPU: %s\n" \
      "e-mail, phone, card" "$RP" "$CP" "$RPM" "$CPM" "$(ratio "$CP" "$CPM")"
    rc="$rc $(ratio "$CC" "$CCM")"; rp="$rp $(ratio "$CP" "$CPM")"
  done
  range() { tr ' ' '\n' <<< "$1" | sed 's/x$//' | grep . | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2fx-%.2fx", lo, hi }'; }
  if [ "$R" != 1 ]; then
    echo "  over $R rounds, req/s bound by CPU: nothing to find $(range "$rc"), e-mail, phone, card $(range "$rp")"
  fi
  echo "  (target: >= 0.85x of the same pipeline without mask)"
fi
if [ "${MASK_TTFT:-0}" != 0 ]; then
  start() {  # config -> port (the gateway runs on the servers' core)
    local port; port=$(free_port)
    $SRV build/manifold -c "$T/$1.yaml" --listen "127.0.0.1:$port" --workers 1 \
      >/dev/null 2>"$T/$1.ttft.err" & pids+=($!)
    wait_port "$port"
    echo "$port"
  }
  PA=$(start plain); PB=$(start mask)
  echo "time to the first content event of a stream (20 events 2 ms apart), $MASK_TTFT each, alternating"
  echo " nothing to restore:"
  $CLI node tests/bench/mask-ttft.mjs "$PA" "$PB" "$MASK_TTFT" "$CLEAN"
  echo " e-mail, phone, card (restored in the stream):"
  $CLI node tests/bench/mask-ttft.mjs "$PA" "$PB" "$MASK_TTFT" "$PII"
fi
