#!/usr/bin/env bash
# The whole test suite: set up, then build and test the release and sanitizer configurations,
# then fuzz every libFuzzer target for a bounded time each (RANKMESH_FUZZ_SECONDS, default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== release build and tests"
scripts/build.sh release
ctest --test-dir build --output-on-failure -j 2 --timeout 300

echo "== sanitizer build (ASan + UBSan) and tests"
scripts/build.sh sanitize
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=$PWD/tests/ubsan.supp
ctest --test-dir build-sanitize --output-on-failure -j 2 --timeout 600

echo "== fuzzing"
scripts/build.sh fuzz
tests/fuzz/run_fuzz.sh build-fuzz "${RANKMESH_FUZZ_SECONDS:-30}"
echo "== all tests passed"
