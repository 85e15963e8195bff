# What the benchmark scripts share (sourced from the repository's root):
# a scratch directory $T and the processes in $pids, both gone at exit
# (KEEP=1 keeps $T and says where); free_port, wait_port, total (a
# callgrind file's instruction count); bench_pin (the servers on the
# last core with the prefix $SRV, the load on core 0 with $CLI); the mock
# upstream (bench_mock, its port in $MOCK, started with $SRV); nginx with
# one server block, by default a keep-alive reverse proxy to the mock
# (nginx_on); and that proxy under callgrind (nginx_instr).
T=$(mktemp -d)
pids=()
bench_cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$T"; }
trap bench_cleanup EXIT
[ -z "${KEEP:-}" ] || echo "kept: $T" >&2
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq "${2:-300}"); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
total() { grep -E '^(summary|totals):' "$1" | head -1 | awk '{print $2}'; }

# wrk gets one core, the servers share the other: the figures then show
# the CPU each proxy spends per request, not the scheduler's moods
bench_pin() {
  CPUS=$(nproc)
  SRV="taskset -c $((CPUS - 1))"; CLI="taskset -c 0"
  [ "$CPUS" -ge 2 ] || { SRV=""; CLI=""; }
}

bench_mock() {  # [build directory (build)]
  ${SRV:-} "${1:-build}/tests/mock/mf-mock" --port 0 > "$T/mock.port" & pids+=($!)
  for _ in $(seq 50); do [ -s "$T/mock.port" ] && break; sleep 0.1; done
  MOCK=$(head -1 "$T/mock.port")
}

# (and /static/NAME: the file \$T/static/NAME, for the yardsticks of
# answers a gateway gives from its config)
NGINX_PROXY="location / { proxy_pass http://mock; proxy_http_version 1.1;
                 proxy_set_header Connection \"\"; proxy_buffering off; }
             location /static/ { alias $T/static/; default_type application/json; }"

# $T/NAME.conf: one worker, the mock as upstream "mock", one server
nginx_conf() {  # name, port, server block, main-context lines, connections
  mkdir -p "$T/$1"
  cat > "$T/$1.conf" <<NGX
worker_processes 1;
$4
pid $T/$1/nginx.pid;
error_log $T/$1/error.log;
events { worker_connections $5; }
http {
  access_log off;
  client_body_temp_path $T/$1; proxy_temp_path $T/$1;
  upstream mock { server 127.0.0.1:$MOCK; keepalive 64; }
  server {
    listen 127.0.0.1:$2;
    $3
  }
}
NGX
}

nginx_on() {  # name, port[, server block (the proxy)[, pinning ($SRV)]]
  nginx_conf "$1" "$2" "${3:-$NGINX_PROXY}" "" 4096
  ${4-${SRV:-}} nginx -c "$T/$1.conf" -p "$T/$1" -g 'daemon off;' & pids+=($!)
}

# the proxy under callgrind, one process: its instructions over N
# keep-alive requests of body (tests/bench/reqs.py checks each answer), to
# path (default /v1/chat/completions) with reqs.py's flags
nginx_instr() {  # requests, body[, path[, reqs.py flags...]] -> total instructions
  local port n=$1 body=$2 path=${3:-/v1/chat/completions}; port=$(free_port)
  shift 2; shift $(( $# > 0 ? 1 : 0 ))
  nginx_conf ngx "$port" "$NGINX_PROXY" $'master_process off;\ndaemon off;' 1024
  valgrind --tool=callgrind --callgrind-out-file="$T/ng.$n.out" \
    nginx -c "$T/ngx.conf" -p "$T/ngx" 2>/dev/null & local pid=$!
  wait_port "$port"
  python3 tests/bench/reqs.py "$port" "$n" "$path" "$body" "$@"
  kill -QUIT "$pid"; wait "$pid" || true
  total "$T/ng.$n.out"
}
