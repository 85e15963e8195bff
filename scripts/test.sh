#!/usr/bin/env bash
# Builds and runs the whole test suite: format check, Check unit tests,
# integration tests over real sockets and the official-SDK compatibility
# tests, each on a plain -Werror build and on an ASan+UBSan build, then
# every libFuzzer driver briefly. Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test || exit 1
jobs=$(nproc)
fail=0
passed=0
failed=0
step() {
  local name=$1; shift
  echo "== $name"
  if "$@"; then passed=$((passed + 1)); echo "== $name: ok"
  else failed=$((failed + 1)); fail=1; echo "== $name: FAILED"; fi
}

fmt() {
  local bad=0 f
  shopt -s globstar nullglob
  for f in host/**/*.[ch] cli/**/*.[ch] plugins/**/*.[ch] sdk/**/*.[ch] \
           examples/**/*.[ch] tests/**/*.[ch]; do
    case $f in */node_modules/*) continue ;; esac
    clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || { echo "not formatted: $f"; bad=1; }
  done
  return $bad
}
# cppcheck over the host, the CLI and the plugins. variableScope is off:
# the code declares a function's locals at the top of the function (or
# block), nginx style, which that check would have moved into inner
# blocks one by one. A false positive is suppressed on the line above it
# (cppcheck-suppress <id>), with the reason when it is not obvious.
cppcheck_run() {
  cppcheck --enable=warning,style,performance,portability --std=c11 \
    --inline-suppr --error-exitcode=1 -q --suppress=variableScope \
    -I host -I . -I sdk/include -I plugins/common host cli plugins
}
build() {  # dir, extra cmake args
  local dir=$1; shift
  cmake -S . -B "$dir" -DMF_WERROR=ON "$@" >/dev/null && cmake --build "$dir" -j"$jobs" >/dev/null
}
unit() { (cd "$1" && ctest --output-on-failure); }
npm_deps() {
  (cd tests/compat && npm ci --no-audit --no-fund --loglevel=error >/dev/null) &&
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}
node_tests() { MF_BUILD=$1 node --test --test-concurrency=1 tests/integration/ tests/compat/; }
fuzzers="sse evstream config http admin proto jscan json govkey mask mask_raw guard provider_openai provider_anthropic provider_gemini provider_bedrock"
fuzz() {
  local f rc=0 corpus
  CC=clang cmake -S . -B build-fuzz -DMF_FUZZ=ON \
    -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer" >/dev/null &&
    cmake --build build-fuzz -j"$jobs" --target $(printf 'fuzz_%s ' $fuzzers) >/dev/null || return 1
  for f in $fuzzers; do
    corpus=$(mktemp -d)
    cp tests/fuzz/corpus/$f/* "$corpus"/
    build-fuzz/tests/fuzz/fuzz_$f -max_total_time="${MF_FUZZ_SECONDS:-10}" -max_len=4096 \
      -artifact_prefix="$corpus/" "$corpus" >"$corpus.log" 2>&1 || { rc=1; tail -30 "$corpus.log"; }
    grep -E "^Done" "$corpus.log" | sed "s/^/fuzz_$f: /"
    rm -rf "$corpus" "$corpus.log"
  done
  return $rc
}

step "clang-format" fmt
step "layers" bash scripts/check-layers.sh
step "Lua library (LuaJIT)" luajit tests/lua/run.lua
step "cppcheck" cppcheck_run
step "build (plain, -Werror)" build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
step "build (ASan+UBSan, -Werror)" build build-asan -DMF_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
step "unit tests (plain)" unit build
step "unit tests (ASan+UBSan)" unit build-asan
step "npm ci (official SDKs, playwright-core)" npm_deps
step "integration + SDK tests (plain)" node_tests build
step "integration + SDK tests (ASan+UBSan)" node_tests build-asan
step "fuzzers" fuzz

echo
echo "$passed passed, $failed failed"
exit $fail
