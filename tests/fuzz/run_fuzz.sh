#!/usr/bin/env bash
# Fuzzes the metadata codec for a bounded time from a fresh seed corpus; exits with the
# fuzzer's status (non-zero on a finding, whose reproducer libFuzzer leaves in the current
# directory). Usage: tests/fuzz/run_fuzz.sh BUILD_DIR SECONDS
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build_dir=$1
seconds=$2

corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT

"$build_dir/tests/fuzz/seed_corpus" "$corpus"

# The malloc limit is CodecLimits::max_bytes (16 MiB) plus a margin for the decoded copy and
# the fuzzer itself: a decoder that reserves for a declared count it has not checked trips it.
status=0
"$build_dir/tests/fuzz/codec_fuzz" -max_total_time="$seconds" -timeout=1 \
  -malloc_limit_mb=64 -rss_limit_mb=2048 "$corpus" || status=$?
exit "$status"
