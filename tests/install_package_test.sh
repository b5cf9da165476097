#!/usr/bin/env bash
# Installs rankmesh from BUILD_DIR into a temporary prefix, then builds and runs an outside
# project that finds it with find_package(rankmesh) and links rankmesh::rankmesh.
set -euo pipefail
build_dir=$1
consumer_src=$2
flags=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
test -x "$work/prefix/bin/rankmesh"
cmake -S "$consumer_src" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"
