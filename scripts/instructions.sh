#!/usr/bin/env bash
# Instructions per small-dict round trip in an embedded runtime of 2 ranks (bench/instructions.cpp),
# counted by callgrind: scripts/instructions.sh [BUILD_DIR] (default build/, built if missing).
# Runs N=1000 and N=3000 round trips over the whole process (all threads), as issue 12 defines
# the figure: (I3000 - I1000) / 2000 is one round trip without start-up.
# Repeatable to about 1% on a quiet machine (other work on the cores changes how the two threads
# interleave, and the counts by up to 3%), unlike times on this machine.
# RANKMESH_INSTRUCTIONS_TRANSPORT=shm|tcp: the same round trip over that transport's channels.
# RANKMESH_INSTRUCTIONS_PATTERN=p2p: the smallest p2p iteration of the bench (f) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
if [ ! -x "$build/bench/rankmesh-instructions" ]; then
  if [ "$build" = build ]; then scripts/build.sh release >/dev/null; else
    cmake --build "$build" -j "${RANKMESH_JOBS:-2}" --target rankmesh-instructions >/dev/null; fi
fi
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
total() {
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1" "$build/bench/rankmesh-instructions" "$1" $transport $pattern \
    2>"$out/log.$1" || { cat "$out/log.$1" >&2; exit 1; }
  sed -n 's/^summary: //p' "$out/cg.$1"
}
transport=${RANKMESH_INSTRUCTIONS_TRANSPORT:-}  # empty: the embedded default, inproc (issue 12's figure)
pattern=${RANKMESH_INSTRUCTIONS_PATTERN:-}
if [ -n "$pattern" ]; then transport=${transport:-inproc}; fi
low=${RANKMESH_INSTRUCTIONS_LOW:-1000}
high=${RANKMESH_INSTRUCTIONS_HIGH:-3000}
a=$(total $low)
b=$(total $high)
what=$([ "$pattern" = p2p ] && echo "p2p iteration (8 B dict one way, object back)" || echo "small-dict round trip")
echo "instructions per $what (${transport:-inproc}): $(( (b - a) / (high - low) ))  (callgrind: $a at N=$low, $b at N=$high)"
