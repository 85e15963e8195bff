#!/usr/bin/env bash
# Builds the gateway, manifoldctl and the plugins (not the tests) and runs
# the gateway on configs/manifold.yaml (or the args given).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target gateway
if [ $# -eq 0 ]; then
  set -- -c configs/manifold.yaml
fi
exec build/manifold "$@"
