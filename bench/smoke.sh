#!/usr/bin/env bash
# The benchmarks' CI smoke test: each benchmark runs once on tiny sizes and ends by itself; no
# time is asserted, only that every measurement comes out (and its results were checked).
#   bench/smoke.sh rankmesh RANKMESH_TOOL OUT_DIR   rankmesh bench --quick (and (c) across two
#                                                   namespaces), then report.py on it
#   bench/smoke.sh mpi OUT_DIR                      builds bench/mpi_bench.cpp with mpicxx and runs
#                                                   it on 2 and 4 ranks, shm and tcp; exits 77
#                                                   (ctest: skipped) when mpicxx or mpirun is missing
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
[ -x "$python" ] || python=python3

case "${1:-}" in
  rankmesh)
    tool=$2 out=$3
    mkdir -p "$out"
    "$tool" bench --quick --json "$out/rankmesh.json"
    "$python" "$here/netns_bench.py" "$tool" "$out/rankmesh.json" --quick  # skips unless root
    "$python" "$here/report.py" "$out/rankmesh.json" /nonexistent --svg "$out/latency.svg" \
      --require rankmesh >/dev/null
    echo "rankmesh bench --quick: $(wc -l < "$out/rankmesh.json") measurements, report drawn"
    ;;
  mpi)
    out=$2
    if ! command -v mpicxx >/dev/null || ! command -v mpirun >/dev/null; then
      echo "SKIPPED: mpicxx/mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
      exit 77
    fi
    mkdir -p "$out"
    mpicxx -O1 -std=c++20 -Wall -Wextra "$here/mpi_bench.cpp" -o "$out/rankmesh-mpi-bench"
    rm -f "$out/mpi.json"
    flags=(--allow-run-as-root --oversubscribe --mca pml ob1)
    for np in 2 4; do
      timeout 120 mpirun "${flags[@]}" --mca btl self,vader -np "$np" \
        "$out/rankmesh-mpi-bench" --quick --transport shm --json "$out/mpi.json"
      timeout 120 mpirun "${flags[@]}" --mca btl self,tcp --mca btl_tcp_if_include lo -np "$np" \
        "$out/rankmesh-mpi-bench" --quick --transport tcp --json "$out/mpi.json"
    done
    "$python" "$here/report.py" /nonexistent "$out/mpi.json" --svg "$out/latency.svg" \
      --require mpi >/dev/null
    echo "mpi_bench --quick: $(wc -l < "$out/mpi.json") measurements, report drawn"
    ;;
  *)
    echo "usage: bench/smoke.sh rankmesh RANKMESH_TOOL OUT_DIR | bench/smoke.sh mpi OUT_DIR" >&2
    exit 2
    ;;
esac
