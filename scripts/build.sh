#!/usr/bin/env bash
# Configures and builds one configuration: scripts/build.sh [release|sanitize|fuzz].
# Build folders: build/, build-sanitize/, build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."

config=${1:-release}
jobs=${RANKMESH_JOBS:-2}
case "$config" in
  release)  dir=build;          flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  # The sanitizer build is also the one without the CUDA backend, so that a machine with no
  # toolkit (a fresh Debian) is always built and tested somewhere.
  sanitize) dir=build-sanitize; flags=(-DCMAKE_BUILD_TYPE=Debug -DRANKMESH_SANITIZE=ON -DRANKMESH_CUDA=OFF) ;;
  fuzz)     dir=build-fuzz;     flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DRANKMESH_FUZZ=ON
                                       -DCMAKE_CXX_COMPILER=clang++) ;;
  *) echo "usage: scripts/build.sh [release|sanitize|fuzz]" >&2; exit 2 ;;
esac

cmake -S . -B "$dir" -G Ninja "${flags[@]}" >/dev/null
cmake --build "$dir" -j "$jobs"
