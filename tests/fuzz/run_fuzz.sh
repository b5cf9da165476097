#!/usr/bin/env bash
# Fuzzes the metadata codec, then the frame decoder, each for a bounded time from a fresh seed
# corpus; exits non-zero when either finds something (libFuzzer leaves the reproducer in the
# current directory). Usage: tests/fuzz/run_fuzz.sh BUILD_DIR SECONDS (per target)
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build_dir=$1
seconds=$2

corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
mkdir "$corpus/codec" "$corpus/frame"

"$build_dir/tests/fuzz/seed_corpus" "$corpus/codec"
"$build_dir/tests/fuzz/frame_seed_corpus" "$corpus/frame"

# The malloc limit is CodecLimits::max_bytes (16 MiB) plus a margin for the decoded copy and
# the fuzzer itself: a decoder that reserves for a declared count it has not checked trips it.
status=0
"$build_dir/tests/fuzz/codec_fuzz" -max_total_time="$seconds" -timeout=1 \
  -malloc_limit_mb=64 -rss_limit_mb=2048 "$corpus/codec" || status=$?
if [[ $status -ne 0 ]]; then
  echo "codec_fuzz found a problem (status $status)" >&2
  exit "$status"
fi

# frame_fuzz decodes with limits of 4 KiB metadata and 1 MiB payload per frame; the same
# malloc limit catches an allocation for a size the decoder has not checked.
"$build_dir/tests/fuzz/frame_fuzz" -max_total_time="$seconds" -timeout=1 \
  -malloc_limit_mb=64 -rss_limit_mb=2048 "$corpus/frame" || status=$?
if [[ $status -ne 0 ]]; then
  echo "frame_fuzz found a problem (status $status)" >&2
  exit "$status"
fi

# control_fuzz: the registry's control messages (metadata up to the fuzzer's length limit).
"$build_dir/tests/fuzz/control_fuzz" -max_total_time="$seconds" -timeout=1 \
  -malloc_limit_mb=64 -rss_limit_mb=2048 || status=$?
if [[ $status -ne 0 ]]; then
  echo "control_fuzz found a problem (status $status)" >&2
fi
exit "$status"
