#!/usr/bin/env bash
# Fuzzes each target for a bounded time; exits non-zero when any finds something (libFuzzer
# leaves the reproducer, crash-* or leak-* or timeout-*, in the current directory).
# Usage: tests/fuzz/run_fuzz.sh BUILD_DIR SECONDS (per target)
#
# Each target starts from its kept corpus, tests/fuzz/corpus/<target without _fuzz>/ (small
# files, in the repository), plus fresh seeds from the seed writers in the current format. What a
# run finds goes to a scratch folder and is dropped, unless RANKMESH_FUZZ_MERGE=1: then inputs
# that add coverage are merged into the kept corpus, to be committed.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build_dir=$1/tests/fuzz
seconds=$2
kept=$(cd "$(dirname "$0")" && pwd)/corpus
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0

# fuzz TARGET [SEED WRITER ARGUMENTS...]: runs TARGET; the seed writer, if any, is called with a
# folder to write into, then its arguments.
#   -max_len: inputs up to 64 KiB, room for frames with payloads and nested metadata.
#   -malloc_limit_mb: CodecLimits::max_bytes (16 MiB) plus a margin for the decoded copy and the
#     fuzzer itself: a decoder that reserves for a declared count it has not checked trips it.
#     frame_fuzz and landing_fuzz decode with limits of 4 KiB metadata and 1 MiB payload per
#     frame, so the same limit catches an allocation for a size the decoder has not checked.
fuzz() {
  local target=$1 fresh=$scratch/$1
  shift
  mkdir -p "$fresh"
  if [[ $# -gt 0 ]]; then
    local writer=$1
    shift
    "$build_dir/$writer" "$fresh" "$@" >/dev/null
  fi
  local corpora=("$fresh")
  [[ -d $kept/${target%_fuzz} ]] && corpora+=("$kept/${target%_fuzz}")
  local result=0
  "$build_dir/$target" -max_total_time="$seconds" -timeout=2 -max_len=65536 \
    -malloc_limit_mb=64 -rss_limit_mb=2048 -print_final_stats=1 "${corpora[@]}" || result=$?
  if [[ $result -ne 0 ]]; then
    echo "$target found a problem (status $result)" >&2
    status=$result
  elif [[ ${RANKMESH_FUZZ_MERGE:-0} == 1 ]]; then
    mkdir -p "$kept/${target%_fuzz}"
    "$build_dir/$target" -merge=1 -max_len=65536 "$kept/${target%_fuzz}" "$fresh"
  fi
}

fuzz codec_fuzz seed_corpus
fuzz frame_fuzz frame_seed_corpus
fuzz landing_fuzz frame_seed_corpus --landing
fuzz handshake_fuzz
fuzz shm_record_fuzz frame_seed_corpus --lent
fuzz control_fuzz

exit "$status"
