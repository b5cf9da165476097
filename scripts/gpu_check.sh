#!/usr/bin/env bash
# The CUDA backend's checks on a GPU host (issue 14), run from the folder scripts/gpu_bundle.sh
# packs:
#
#   bash gpu_check.sh OUTDIR
#
# Steps: what the host allows (kernel and runtime, glibc, ldd of every binary, /dev/shm, pidfd_open,
# process_vm_readv, the GPU, CUDA IPC between two processes), the GPU test suite, the pipeline
# example with --device cuda embedded and under `rankmesh launch` with 2 and 4 processes sharing
# the GPU, and the device benchmark. Each step runs under its own timeout (and never past the
# check's overall budget, so that the whole check ends within 4 minutes and can be rerun once in
# a device session), writes OUTDIR/<step>.log, and gets one OK/FAIL/SKIP line, printed and
# written to OUTDIR/summary.txt (indented lines under a step are its details: the benchmark's
# table). Without a GPU, the GPU steps say SKIP with the reason the programs give. The last line
# counts them; the exit status is 1 when any step failed. Nothing is left behind: each step's
# processes are killed when its time is up, and the steps' temporary files live in one folder
# removed at the end.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -ne 1 ]; then
  echo "usage: bash gpu_check.sh OUTDIR" >&2
  exit 2
fi
mkdir -p "$1" && out=$(cd "$1" && pwd) || exit 2
summary=$out/summary.txt
: >"$summary"
cd "$here" || exit 2

# The whole check's budget: 4 minutes less a margin for the bookkeeping between steps.
deadline=$((SECONDS + 225))
# The steps' temporary files (rankmesh's own, and anything a test makes under TMPDIR).
scratch=$(mktemp -d "${TMPDIR:-/tmp}/rankmesh-gpu-check.XXXXXX") || exit 2
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch
# Launched programs and tests find the bundle's programs (rankmesh, rankmesh-gpu-ranks) by name.
export PATH=$here:$PATH

say() { printf '%s\n' "$*" | tee -a "$summary"; }
verdict() {  # verdict OK|FAIL|SKIP STEP DETAIL
  say "$(printf '%-4s %s: %s' "$1" "$2" "$3")"
}
oneline() { tr '\n' ' ' | sed 's/  */ /g; s/^ //; s/ $//' | cut -c1-"${1:-300}"; }

# step NAME BUDGET CMD...: CMD under `timeout` (BUDGET seconds, or what is left of the check's
# budget), its output in OUTDIR/NAME.log. Sets rc (124: timed out) and log. Returns 1 without
# running CMD when too little time is left.
rc=0
log=
step() {
  local name=$1 budget=$2 left
  shift 2
  log=$out/$name.log
  left=$((deadline - SECONDS))
  if [ "$left" -lt 5 ]; then
    verdict FAIL "$name" "not run: the check's 4-minute budget is spent"
    return 1
  fi
  [ "$budget" -gt "$left" ] && budget=$left
  local start=$SECONDS
  printf '$ %s\n# timeout %d s, started %s\n' "$(printf '%s ' "$@" | oneline 2000)" "$budget" \
    "$(date -u +%H:%M:%S)" >"$log"
  timeout -k 5 "$budget" "$@" >>"$log" 2>&1
  rc=$?
  printf '# exit %d after %d s\n' "$rc" $((SECONDS - start)) >>"$log"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then rc=124; fi
  return 0
}
body() { sed '1,2d;$d' "$log"; }  # the command's own output
last_words() { body | grep -v '^\s*$' | tail -n "${1:-2}" | oneline; }

# What a binary said about a missing GPU ("no CUDA device: ..."), if it said it.
no_device_line() { body | grep -m1 -io 'no CUDA device.*' | oneline 200; }

# A GPU step's verdict when it did not succeed: SKIP when there is no GPU and the program said
# so, else FAIL with its last words.
not_ok() {
  local name=$1 what
  if [ "$rc" -eq 124 ]; then
    verdict FAIL "$name" "timed out (log: $name.log)"
  elif [ -n "$gpu_missing" ] && what=$(no_device_line) && [ -n "$what" ]; then
    verdict SKIP "$name" "$what"
  else
    verdict FAIL "$name" "exit $rc: $(last_words 3)"
  fi
}

t0=$SECONDS
shm_before=$(ls -A /dev/shm 2>/dev/null | sort)
say "# rankmesh GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname), bundle $here"

# --- the host
if step probe_host 10 bash -c 'uname -sr; ldd --version | sed -n 1p; v=$(cat /proc/version; dmesg 2>/dev/null | sed -n 1,40p; cat /proc/1/cgroup 2>/dev/null)
  if echo "$v" | grep -qi gvisor || [ "$(uname -r)" = 4.4.0 ]; then echo "runtime: gVisor"
  elif echo "$v" | grep -qi -- "-fc-\|firecracker"; then echo "runtime: Firecracker"
  elif grep -qw hypervisor /proc/cpuinfo; then echo "runtime: a VM (hypervisor flag)"
  else echo "runtime: no VM or sandbox hint"; fi; echo "cpus $(nproc)"'; then
  if [ "$rc" -eq 0 ]; then verdict OK probe_host "$(body | oneline)"; else verdict FAIL probe_host "exit $rc: $(last_words)"; fi
fi

# Every binary and library of the bundle resolves what it needs (libcuda.so.1 is loaded by the
# static CUDA runtime at run time, through LD_LIBRARY_PATH, and never shows here).
if step probe_ldd 20 bash -c 'for f in ./*; do [ -f "$f" ] && head -c4 "$f" | grep -q ELF || continue
    echo "== $f"; ldd "$f" 2>&1; done'; then
  missing=$(body | grep 'not found' | sort -u | oneline)
  checked=$(body | grep -c '^== ')
  if [ "$rc" -eq 124 ]; then verdict FAIL probe_ldd "timed out"
  elif [ -n "$missing" ]; then verdict FAIL probe_ldd "$missing"
  else verdict OK probe_ldd "$checked binaries and libraries, nothing missing"; fi
fi

if step probe_shm 10 df -h /dev/shm; then
  if [ "$rc" -eq 0 ]; then verdict OK probe_shm "$(body | tail -1 | oneline)"; else verdict FAIL probe_shm "exit $rc: $(last_words)"; fi
fi

for c in pidfd vmreadv; do
  if step "probe_$c" 20 ./sysprobe "$c"; then
    if [ "$rc" -eq 0 ] && ! body | grep -q '^FAIL'; then verdict OK "probe_$c" "$(body | grep '^OK' | sed 's/^OK *//' | oneline)"
    else verdict FAIL "probe_$c" "exit $rc: $(body | grep -v '^OK' | oneline)"; fi
  fi
done

# Is there a GPU? The static CUDA runtime's own answer (cudaprobe info), and nvidia-smi's line.
gpu_missing="no GPU check ran"
if step probe_cuda 30 ./cudaprobe info; then
  if [ "$rc" -eq 0 ]; then
    gpu_missing=
    verdict OK probe_cuda "$(body | grep -E '^OK +(device|cuda_versions)' | sed 's/^OK *//' | oneline 400)"
  else
    gpu_missing=$( (body | grep '^FAIL device_count'; body | grep '^FAIL') | head -1 | sed 's/^FAIL *//' | oneline 200)
    [ -n "$gpu_missing" ] || gpu_missing="cudaprobe info: exit $rc"
    verdict SKIP probe_cuda "no usable GPU: $gpu_missing"
  fi
fi
if step nvidia_smi 20 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_mode,mig.mode.current --format=csv,noheader; then
  if [ "$rc" -eq 0 ]; then verdict OK nvidia_smi "$(body | oneline)"
  elif [ -n "$gpu_missing" ]; then verdict SKIP nvidia_smi "exit $rc: $(last_words 1)"
  else verdict FAIL nvidia_smi "exit $rc with a GPU present: $(last_words 1)"; fi
fi

# CUDA IPC between two processes (the same-node transport). Where it is refused the backend
# stages through host memory instead, so its absence is a fact about the host, not a failure.
if step probe_cuda_ipc 40 ./cudaprobe ipc; then
  if [ "$rc" -eq 0 ] && ! body | grep -q '^FAIL'; then verdict OK probe_cuda_ipc "$(body | grep '^OK' | sed 's/^OK *//' | oneline 300)"
  elif [ "$rc" -eq 124 ]; then verdict FAIL probe_cuda_ipc "timed out"
  elif [ -n "$gpu_missing" ]; then verdict SKIP probe_cuda_ipc "no usable GPU: $gpu_missing"
  else verdict SKIP probe_cuda_ipc "CUDA IPC refused here (the backend stages through host memory): $(body | grep -m1 '^FAIL' | oneline 300)"; fi
fi

# --- the GPU test suite: one line per test case with its duration; the SKIPPED lines the
# suite prints without a GPU. Its cross-process cases launch the bundle's rankmesh and
# rankmesh-gpu-ranks (named here: the paths compiled in are the build machine's).
if [ ! -x ./rankmesh-gpu-tests ]; then
  verdict FAIL gpu_tests "rankmesh-gpu-tests is not in the bundle (tests/gpu not built)"
elif step gpu_tests 90 env RANKMESH_TOOL="$here/rankmesh" RANKMESH_GPU_RANKS="$here/rankmesh-gpu-ranks" \
    ./rankmesh-gpu-tests --reporters=console --duration=true --no-version; then
  cases=$(body | grep -m1 '^\[doctest\] test cases:' | sed 's/^\[doctest\] //' | oneline)
  skipped=$(body | grep -c 'SKIPPED: no CUDA device')
  if [ "$rc" -eq 0 ] && [ -n "$gpu_missing" ] && [ "$skipped" -gt 0 ]; then
    verdict SKIP gpu_tests "$cases; $skipped skipped: $(body | grep -m1 -o 'SKIPPED: no CUDA device.*' | oneline 200)"
  elif [ "$rc" -eq 0 ] && [ -z "$gpu_missing" ] && [ "$skipped" -gt 0 ]; then
    verdict FAIL gpu_tests "$skipped cases skipped although a GPU is present: $(body | grep -m1 -o 'SKIPPED.*' | oneline 200)"
  elif [ "$rc" -eq 0 ]; then
    verdict OK gpu_tests "$cases"
  elif [ "$rc" -eq 124 ]; then
    verdict FAIL gpu_tests "timed out (log: gpu_tests.log)"
  else
    verdict FAIL gpu_tests "exit $rc: $cases; $(body | grep -m3 -E 'ERROR|FATAL' | oneline 300)"
  fi
fi

# --- the suite's cases between processes and over shm again with CUDA IPC on
# (RANKMESH_CUDA_IPC=1, opt-in until it has passed here): device tensor dicts to a rank of this
# node travel as exported device memory instead of staged through host memory (embedded ranks
# over shm take the backend's same-process branch). Inproc carries device memory itself, so the
# other cases would run as before.
if [ -x ./rankmesh-gpu-tests ] &&
    step gpu_tests_ipc 60 env RANKMESH_CUDA_IPC=1 RANKMESH_TOOL="$here/rankmesh" \
      RANKMESH_GPU_RANKS="$here/rankmesh-gpu-ranks" \
      ./rankmesh-gpu-tests --test-case='*process*,*<shm>*' --reporters=console --duration=true --no-version; then
  cases=$(body | grep -m1 '^\[doctest\] test cases:' | sed 's/^\[doctest\] //' | oneline)
  if [ "$rc" -eq 0 ] && [ -n "$gpu_missing" ]; then
    verdict SKIP gpu_tests_ipc "no usable GPU: $gpu_missing"
  elif [ "$rc" -eq 0 ]; then
    verdict OK gpu_tests_ipc "$cases"
  elif [ "$rc" -eq 124 ]; then
    verdict FAIL gpu_tests_ipc "timed out (log: gpu_tests_ipc.log)"
  else
    verdict FAIL gpu_tests_ipc "exit $rc: $cases; $(body | grep -m3 -E 'ERROR|FATAL' | oneline 300)"
  fi
fi

# --- the pipeline example with --device cuda: the program compares the last stage's output with
# the one-rank host reference and exits non-zero beyond its tolerance; its last line says by how
# much (prefixed '[rank 0] ' under the launcher).
pipeline_step() {
  local name=$1 budget=$2
  shift 2
  step "$name" "$budget" "$@" || return
  local tolerance diff
  tolerance=$(body | sed -n 's/^\(\[rank 0\] \)\?tolerance=//p' | tail -1)
  diff=$(body | sed -n 's/^\(\[rank 0\] \)\?max_abs_diff=//p' | tail -1)
  if [ "$rc" -eq 0 ] && [ -n "$diff" ]; then
    verdict OK "$name" "max_abs_diff=$diff (tolerance $tolerance), $(body | grep -m1 -o '[0-9]* ranks (tp [0-9]* x pp [0-9]*)')"
  else
    not_ok "$name"
  fi
}
pipeline_step pipeline_embedded 40 ./rankmesh-pipeline --device cuda
# Two processes: the stages' device tensors cross processes (tp 1 x pp 2); four: the default
# tp 2 x pp 2, with the TP all_reduce on device tensors across processes too. The launcher's own
# timeout stops the ranks a little before the step's does.
pipeline_step pipeline_launch_2 40 ./rankmesh launch --nproc-per-node 2 --timeout-s 35 -- \
  ./rankmesh-pipeline --device cuda --tp 1 --pp 2
pipeline_step pipeline_launch_4 40 ./rankmesh launch --nproc-per-node 4 --timeout-s 35 -- \
  ./rankmesh-pipeline --device cuda

# --- the device benchmark: (b) and (d), host tensors against CUDA tensors
if step device_bench 40 ./rankmesh-device-bench; then
  if [ "$rc" -eq 0 ] && body | grep -q '^SKIP: no CUDA device'; then
    if [ -n "$gpu_missing" ]; then verdict SKIP device_bench "$(body | grep -m1 '^SKIP' | sed 's/^SKIP: //' | oneline)"
    else verdict FAIL device_bench "it found no CUDA device although there is a GPU: $(body | grep -m1 '^SKIP' | oneline)"; fi
  elif [ "$rc" -eq 0 ]; then
    verdict OK device_bench "$(body | tail -1 | oneline)"
    body | grep -E '^(row|\()' | sed 's/^/     /' | tee -a "$summary"
  else
    not_ok device_bench
  fi
fi

# --- nothing left behind: no process started from this folder, no new /dev/shm entry
left=
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" = $$ ] && continue
  exe=$(readlink "$p/exe" 2>/dev/null) || continue
  case "$exe" in "$here"/*) left+="$pid ($(basename "$exe")) "; kill -KILL "$pid" 2>/dev/null ;; esac
done
shm_new=$(comm -13 <(printf '%s\n' "$shm_before") <(ls -A /dev/shm 2>/dev/null | sort) | oneline)
if [ -n "$left" ]; then verdict FAIL cleanup "processes of the bundle still running (killed now): $left"
elif [ -n "$shm_new" ]; then verdict FAIL cleanup "new in /dev/shm: $shm_new"
else verdict OK cleanup "no process of the bundle left, /dev/shm as before"; fi

ok=$(grep -c '^OK ' "$summary")
failed=$(grep -c '^FAIL ' "$summary")
skipped=$(grep -c '^SKIP ' "$summary")
say "$ok OK, $failed FAIL, $skipped SKIP in $((SECONDS - t0)) s"
[ "$failed" -eq 0 ]
