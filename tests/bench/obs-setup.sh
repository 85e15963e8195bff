# The set-up the observability benchmarks share (sourced by obs.sh and
# obs-instr.sh, from the repository's root): lib.sh's (scratch directory,
# mock, nginx), an OTLP sink answering 200, and the gateway's config of
# one pipeline (accesslog) without and with the observability stages.
# SRV, when set, is the command prefix that pins the servers.
source tests/bench/lib.sh

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
