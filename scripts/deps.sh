#!/usr/bin/env bash
# Installs the Debian packages Manifold needs when they are missing.
#   deps.sh        build and run
#   deps.sh test   and what the test suite needs (Check, clang for the
#                  fuzzers, cppcheck, Node.js for the SDK tests, nginx,
#                  wrk, valgrind and python3 for benchmarks, prometheus for
#                  promtool and the scrape test, chromium for the dashboard
#                  test; openssl makes the certificates of the TLS
#                  collector test)
set -euo pipefail
need=(cmake make gcc pkg-config libevent-dev libluajit-5.1-dev libjansson-dev
      libssl-dev libhiredis-dev libyaml-dev libsqlite3-dev zlib1g-dev
      libpcre2-dev
      ca-certificates)
if [ "${1:-}" = test ]; then
  need+=(check clang libclang-rt-14-dev clang-format cppcheck nginx-light wrk
         valgrind python3 luajit
         redis-server redis-tools prometheus chromium openssl)
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
fi
missing=()
for p in "${need[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
