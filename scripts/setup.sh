#!/usr/bin/env bash
# Installs the Debian packages rankmesh needs, only those missing; silent when all are present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build
  libcaf-dev libasio-dev libmsgpack-cxx-dev nlohmann-json3-dev doctest-dev libssl-dev
  clang libclang-rt-14-dev   # the libFuzzer configuration
  python3-numpy              # the vLLM layout oracle (run with /usr/bin/python3)
  python3-dev pybind11-dev python3-torch python3-pytest  # the Python module rankmesh.distributed
  iproute2                   # the two-namespace test: veth pairs
  openmpi-bin libopenmpi-dev # the MPI side of the benchmarks (scripts/bench.sh)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
