#!/usr/bin/env bash
# Builds Manifold and runs it on configs/manifold.yaml (or the args given).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
if [ $# -eq 0 ]; then
  set -- -c configs/manifold.yaml
fi
exec build/manifold "$@"
