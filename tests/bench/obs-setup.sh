# The set-up the observability benchmarks share (sourced by obs.sh and
# obs-instr.sh, from the repository's root): a scratch directory and the
# processes to stop on exit, the mock upstream, nginx servers (a proxy
# to the mock, or an OTLP sink answering 200), and the gateway's config
# of one pipeline (accesslog) without and with the observability stages.
# SRV, when set, is the command prefix that pins the servers.
T=$(mktemp -d)
pids=()
obs_cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$T"; }
trap obs_cleanup EXIT
[ -z "${KEEP:-}" ] || echo "kept: $T" >&2
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq "${2:-300}"); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# the mock upstream, its port in MOCK
obs_mock() {
  ${SRV:-} build/tests/mock/mf-mock --port 0 > "$T/mock.port" & pids+=($!)
  for _ in $(seq 50); do [ -s "$T/mock.port" ] && break; sleep 0.1; done
  MOCK=$(head -1 "$T/mock.port")
}

# an nginx with one server block (the mock as upstream "mock")
nginx_on() {  # name, port, server block[, cpu pinning]
  mkdir -p "$T/$1"
  cat > "$T/$1.conf" <<NGX
worker_processes 1;
pid $T/$1/nginx.pid;
error_log $T/$1/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $T/$1; proxy_temp_path $T/$1;
  upstream mock { server 127.0.0.1:$MOCK; keepalive 64; }
  server { listen 127.0.0.1:$2; $3 }
}
NGX
  ${4-${SRV:-}} nginx -c "$T/$1.conf" -p "$T/$1" -g 'daemon off;' & pids+=($!)
}
# the OTLP sink: 200 to every export, its port in SINK
obs_sink() {  # [cpu pinning]
  SINK=$(free_port)
  nginx_on sink "$SINK" 'location / { return 200 "{}"; }' "${1-${SRV:-}}"
}

# The stages the runs compare, put before accesslog.
OBS_PROM="  - name: prometheus
    plugin: prometheus"
OBS_STATUS="status: { listen: 127.0.0.1:0 }"
obs_otel() {  # [extra otel config, e.g. ", flush_ms: 100"]
  printf '  - name: otel\n    plugin: otel\n    config: { endpoint: "http://127.0.0.1:%s/v1/traces"%s }' "$SINK" "${1:-}"
}

# $T/NAME.yaml: one worker, the mock as openai, accesslog to $T/NAME-access.log
obs_conf() {  # name, log level, extra stages, extra top-level config
  cat > "$T/$1.yaml" <<YAML
listen: 127.0.0.1:0
workers: 1
log_level: $2
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
$3
  - name: accesslog
    plugin: accesslog
    config: { path: $T/$1-access.log }
$4
YAML
}
