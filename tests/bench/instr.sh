#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a plain nginx
# reverse proxy and Manifold on its default config (configs/manifold.yaml,
# the openai provider pointed at the mock), one worker each, on the same
# mock; then Manifold with key-auth and limits (embedded store) and one
# consumer, and with 100,000 consumers in its config (the requests from
# the first): the per-request cost must not grow with the consumers.
# The governance rows also say how much of it is the SQLite writer's
# thread and how many requests each of its commits held: it commits in
# groups (what settled within 5 ms), so its share depends on how many
# requests callgrind's slowed-down server settles in 5 ms (about 2 here,
# fewer on a loaded machine; at full speed under load, dozens). The
# worker's part (the rest) does not depend on timing.
# Each server is run twice, over N1 and N2 sequential keep-alive
# requests; (total(N2) - total(N1)) / (N2 - N1) cancels start-up and
# shutdown. The count does not drift with the machine's load.
#   tests/bench/instr.sh [N1 N2]     (default 200 1200)
# Expects build/ to be built (run.sh does it) and valgrind installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${1:-200}
N2=${2:-1200}
source tests/bench/lib.sh
BODY='{"model":"gpt-4o","messages":[{"role":"user","content":"benchmark me please"}]}'

bench_mock

# the limits stage's writer thread (its function inclusive), and its
# commits (the calls that write WAL frames)
writer() {
  callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
    awk '/writer_main/ && /limits/ { gsub(",", "", $1); if ($1 + 0 > m) m = $1 + 0 } END { print m + 0 }'
}
commits() {
  callgrind_annotate --tree=caller --threshold=100 "$1" 2>/dev/null |
    awk '/^$/ { n = 0 } /^ *[0-9,]+ .*< / { if (match($0, /\(([0-9,]+)x\)/)) { c = substr($0, RSTART + 1, RLENGTH - 3); gsub(",", "", c); n += c } }
         /\* +[^ ]*:sqlite3WalFrames / { print n; f = 1; exit } END { if (!f) print 0 }'
}


run_manifold() {  # requests -> total instructions
  local port; port=$(free_port)
  OPENAI_API_KEY=sk-bench-0123456789abcdef OPENAI_BASE_URL="http://127.0.0.1:$MOCK/v1" \
  MANIFOLD_ADMIN_SOCKET="$T/admin.sock" \
    valgrind --tool=callgrind --callgrind-out-file="$T/mf.$1.out" \
    build/manifold -c configs/manifold.yaml -p build/plugins \
      --listen "127.0.0.1:$port" --workers 1 >/dev/null 2>"$T/mf.$1.err" & local pid=$!
  wait_port "$port"
  python3 tests/bench/reqs.py "$port" "$1" /v1/chat/completions "$BODY"
  kill -TERM "$pid"; wait "$pid" || true
  total "$T/mf.$1.out"
}

run_gov() {  # requests, consumers -> total instructions: key-auth and
  # limits (embedded store) with N consumers in the config, the requests
  # all from the first one
  local port; port=$(free_port)
  if [ ! -s "$T/gov.$2.yaml" ]; then
    {
      cat <<YAML
listen: 127.0.0.1:0
workers: 1
log_level: info
plugin_dir: $PWD/build/plugins
providers:
  - name: openai
    type: openai
    base_url: http://127.0.0.1:$MOCK/v1
    keys: ["sk-bench-0123456789abcdef"]
    models: ["gpt-*"]
stages:
  - { name: auth, plugin: key-auth, init_timeout: 30m, config: { secret: bench-secret-0123456789abcdef, db: none } }
  - { name: limits, plugin: limits, init_timeout: 30m, config: { db: $T/usage.$2.db } }
  - { name: accesslog, plugin: accesslog, config: { path: $T/gov.$2.log } }
prices:
  gpt-4o: { input: 2.5, output: 10 }
consumers:
YAML
      awk -v n="$2" 'BEGIN { for (i = 0; i < n; i++) printf "  - { name: c%d, keys: [\"k-bench-consumer-%d\"], limits: { rpm: 100000000, tpm: 1000000000000, concurrency: 10000 }, budget: { usd: 100000000, period: month } }\n", i, i }'
    } > "$T/gov.$2.yaml"
  fi
  rm -f "$T/usage.$2.db"*
  # 100,000 consumers are a 16 MB config, minutes to load under
  # callgrind: counting starts once the port is open (the requests and
  # the shutdown are counted, as for the others)
  valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$T/gov.$2.$1.out" \
    build/manifold -c "$T/gov.$2.yaml" --listen "127.0.0.1:$port" \
      --workers 1 >/dev/null 2>"$T/gov.$2.$1.err" & local pid=$!
  wait_port "$port" 12000 || { cat "$T/gov.$2.$1.err" >&2; return 1; }
  # the port opens before the start ends (each worker's TLS context):
  # counting starts at the start-up's last line, so that none of it
  # lands in one run's count and not in the other's
  for _ in $(seq 12000); do grep -q 'listening on' "$T/gov.$2.$1.err" && break; sleep 0.1; done
  callgrind_control -i on "$pid" >/dev/null
  python3 tests/bench/reqs.py "$port" "$1" /v1/chat/completions "$BODY" \
    "Bearer k-bench-consumer-0"
  kill -TERM "$pid"; wait "$pid" || true
  echo "$(total "$T/gov.$2.$1.out") $(writer "$T/gov.$2.$1.out") $(commits "$T/gov.$2.$1.out")"
}

per_req() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (b - a) / n }'; }
NG=$(per_req "$(nginx_instr "$N1" "$BODY")" "$(nginx_instr "$N2" "$BODY")" $((N2 - N1)))
MF=$(per_req "$(run_manifold "$N1")" "$(run_manifold "$N2")" $((N2 - N1)))
gov() {  # consumers -> "per request" "of which the writer thread"
  # "the worker's (the rest)" "requests per commit"
  local a b
  read -r -a a <<<"$(run_gov "$N1" "$1")"
  read -r -a b <<<"$(run_gov "$N2" "$1")"
  echo "$(per_req "${a[0]}" "${b[0]}" $((N2 - N1))) $(per_req "${a[1]}" "${b[1]}" $((N2 - N1)))" \
    "$(per_req "$((a[0] - a[1]))" "$((b[0] - b[1]))" $((N2 - N1)))" \
    "$(awk -v c="$((b[2] - a[2]))" -v n="$((N2 - N1))" 'BEGIN { printf "%.1f", (c > 0 ? n / c : 0) }')"
}
read -r GOV1 GOV1W GOV1R GOV1B <<<"$(gov 1)"
read -r GOV100K GOV100KW GOV100KR GOV100KB <<<"$(gov 100000)"
echo "instructions per non-stream request (callgrind, ($N2 - $N1) requests, default config)"
printf "  %-34s %10s instr/req   1.00x\n" "nginx (1 worker, keepalive)" "$NG"
printf "  %-34s %10s instr/req   %s\n" "manifold (1 worker, default config)" "$MF" \
  "$(awk -v a="$MF" -v b="$NG" 'BEGIN { printf "%.2fx", a / b }')"
printf "  %-34s %10s instr/req   %s  (worker %s, %.2fx; SQLite writer %s, %s requests a commit)\n" "+ key-auth + limits, 1 consumer" "$GOV1" \
  "$(awk -v a="$GOV1" -v b="$NG" 'BEGIN { printf "%.2fx", a / b }')" "$GOV1R" "$(awk -v a="$GOV1R" -v b="$NG" 'BEGIN { print a / b }')" "$GOV1W" "$GOV1B"
printf "  %-34s %10s instr/req   %s  (worker %s, %.2fx; SQLite writer %s, %s requests a commit)\n" "+ key-auth + limits, 100k consumers" "$GOV100K" \
  "$(awk -v a="$GOV100K" -v b="$NG" 'BEGIN { printf "%.2fx", a / b }')" "$GOV100KR" "$(awk -v a="$GOV100KR" -v b="$NG" 'BEGIN { print a / b }')" "$GOV100KW" "$GOV100KB"
