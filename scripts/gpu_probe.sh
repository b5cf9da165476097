#!/usr/bin/env bash
# What a GPU host allows rankmesh's CUDA backend (issue 14): a bundle of small probes, built here,
# run there, each check with its own timeout and one OK/FAIL/SKIP line.
#
#   scripts/gpu_probe.sh build [DIR]   build the bundle here (default build-gpu-probe/bundle):
#                                      sysprobe (static), cudaprobe (sm_90 + compute_90 PTX, cudart
#                                      static, static libstdc++/libgcc, RPATH $ORIGIN, stripped),
#                                      torch_probe.py, the sources, and this script
#   DIR/gpu_probe.sh run [OUTDIR]      run every check on the GPU host; prints and writes
#                                      OUTDIR/probe.txt (OUTDIR defaults to $OUT, else ./gpu-probe-out)
#
# With the device tool, from the repository root:
#   scripts/gpu_probe.sh build
#   run(command="timeout 250 bash build-gpu-probe/bundle/gpu_probe.sh run", carry=["build-gpu-probe"], timeout_s=300)
# docs/gpu-host.md has what it found.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

build() {
  local root dir nvcc
  root=$(cd "$here/.." && pwd)
  dir=${1:-$root/build-gpu-probe/bundle}
  nvcc=${NVCC:-/usr/local/cuda/bin/nvcc}
  mkdir -p "$dir"
  set -e
  g++ -std=c++20 -O2 -Wall -static -o "$dir/sysprobe" "$root/tests/gpu/probe/sysprobe.cpp"
  # one nvcc at a time (-j1): small machines
  "$nvcc" -std=c++20 -O2 \
    -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 \
    -cudart static -Xcompiler -static-libstdc++,-static-libgcc -Xlinker -rpath,'$ORIGIN' \
    -o "$dir/cudaprobe" "$root/tests/gpu/probe/cudaprobe.cu"
  strip "$dir/sysprobe" "$dir/cudaprobe"
  cp "$root/tests/gpu/probe/sysprobe.cpp" "$root/tests/gpu/probe/cudaprobe.cu" \
     "$root/tests/gpu/probe/torch_probe.py" "$dir/"
  cp "$root/scripts/gpu_probe.sh" "$dir/gpu_probe.sh"
  chmod +x "$dir/gpu_probe.sh"
  set +e
  echo "bundle: $dir ($(du -sh "$dir" | cut -f1))"
  for b in "$dir/sysprobe" "$dir/cudaprobe"; do
    echo "ldd $(basename "$b"):"; ldd "$b" 2>&1 | sed 's/^/  /'
  done
  echo "newest glibc symbol cudaprobe needs: $(objdump -T "$dir/cudaprobe" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1)"
}

# ---------------------------------------------------------------------------------------------
out_file=/dev/null
say() { printf '%s\n' "$*" | tee -a "$out_file"; }

# chk NAME SECONDS CMD...: run CMD under a timeout. Its own OK/FAIL/SKIP lines pass through; a
# timeout, a crash or a command that printed no verdict gets one line for NAME.
chk() {
  local name=$1 secs=$2; shift 2
  local tmp rc
  tmp=$(mktemp)
  timeout -k 5 "$secs" "$@" >"$tmp" 2>&1
  rc=$?
  sed 's/\r//' "$tmp" | tee -a "$out_file"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "FAIL $name: timed out after ${secs} s"
  elif ! grep -qE '^(OK|FAIL|SKIP) ' "$tmp"; then
    if [ $rc -eq 0 ]; then say "OK   $name"; else say "FAIL $name: exit $rc"; fi
  elif [ $rc -ne 0 ] && ! grep -q '^FAIL' "$tmp"; then say "FAIL $name: exit $rc"
  fi
  rm -f "$tmp"
}

# info NAME SECONDS CMD...: a fact about the host, one OK line with the command's (first) output
info() {
  local name=$1 secs=$2; shift 2
  local v rc
  v=$(timeout -k 2 "$secs" bash -o pipefail -c "$*" 2>&1); rc=$?
  v=$(printf '%s' "$v" | tr '\n' ' ' | sed 's/  */ /g; s/ $//' | cut -c1-600)
  if [ $rc -eq 124 ]; then say "FAIL $name: timed out after ${secs} s"
  elif [ $rc -ne 0 ] && [ -z "$v" ]; then say "SKIP $name: exit $rc"
  else say "$( [ $rc -eq 0 ] && echo 'OK  ' || echo 'SKIP') $name: $v"; fi
}

run_probe() {
  local dir=$here outdir=${1:-${OUT:-$PWD/gpu-probe-out}}
  mkdir -p "$outdir"
  out_file=$outdir/probe.txt
  : >"$out_file"
  local t0=$SECONDS
  say "# rankmesh GPU host probe, $(date -u +%Y-%m-%dT%H:%M:%SZ), bundle $dir"
  say "## host"
  info glibc 5 'ldd --version | sed -n 1p; getconf GNU_LIBC_VERSION'
  info libstdcxx 5 'f=$(ls /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6 2>/dev/null | sed -n 1,1p); echo "$f newest $(grep -ao "GLIBCXX_3\.4\.[0-9]*" "$f" | sort -Vu | tail -1)"'
  info os_release 5 'grep -E "^PRETTY_NAME" /etc/os-release'
  info kernel 5 'uname -a'
  info proc_version 5 'cat /proc/version'
  info dmesg_head 5 'dmesg 2>&1 | sed -n 1,5p'
  info runtime_guess 5 'v=$(cat /proc/version; dmesg 2>/dev/null | sed -n 1,40p; uname -r); if echo "$v" | grep -qi gvisor || [ "$(uname -r)" = 4.4.0 ]; then echo gVisor; elif echo "$v" | grep -qi -- "-fc-\|firecracker"; then echo Firecracker; else echo "no gVisor/Firecracker hint"; fi; grep -m1 -o hypervisor /proc/cpuinfo'
  info whoami 5 'id'
  info env_cuda 5 'env | grep -E "^(CUDA_|NVIDIA_|LD_LIBRARY_PATH|PATH=)" | sort'
  info cpus 5 'echo "nproc $(nproc), $(grep -c ^processor /proc/cpuinfo) in cpuinfo, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2)"'
  info memory 5 'grep -E "^(MemTotal|MemAvailable|HugePages_Total|Hugepagesize)" /proc/meminfo; cat /sys/fs/cgroup/memory.max 2>/dev/null; cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null'
  info ulimits 5 'echo "memlock $(ulimit -l) nofile $(ulimit -n) nproc $(ulimit -u) stack $(ulimit -s)"'
  info ptrace_scope 5 'cat /proc/sys/kernel/yama/ptrace_scope 2>&1'
  info seccomp_caps 5 'grep -E "^(Seccomp|CapEff|NoNewPrivs)" /proc/self/status'
  info devshm_mount 5 'df -h /dev/shm | tail -1; grep " /dev/shm " /proc/mounts'
  info tmp_space 5 'df -h /tmp | tail -1'
  info tools 10 'for t in nvcc cmake ninja g++ gcc c++ python3 strace gdb; do p=$(command -v $t) && echo "$t=$p" || echo "$t=none"; done; nvcc --version 2>/dev/null | sed -n "$(( $(nvcc --version | wc -l) - 1 ))p"; cmake --version 2>/dev/null | sed -n 1,1p; g++ --version 2>/dev/null | sed -n 1,1p'
  say "## ldd"
  for b in "$dir/sysprobe" "$dir/cudaprobe"; do info "ldd_$(basename "$b")" 5 "ldd '$b'"; done
  say "## system calls (sysprobe)"
  for c in devshm memfd pidfd vmreadv hugepages sockets; do chk "sys_$c" 20 "$dir/sysprobe" "$c"; done
  say "## nvidia-smi"
  info nvidia_smi 20 'nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_mode,persistence_mode,mig.mode.current,pci.bus_id --format=csv,noheader'
  info libcuda 5 'ldconfig -p | grep -E "libcuda\.so|libnvidia-ml\.so" | sed -n 1,4p; ls /usr/local/nvidia/lib64/libcuda.so.* 2>/dev/null; cat /proc/driver/nvidia/version 2>/dev/null | sed -n 1,1p'
  info nvidia_smi_header 20 'nvidia-smi | sed -n 3p'
  info nvidia_smi_procs 20 'nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader; echo "(end)"'
  say "## CUDA (cudaprobe)"
  local cp=$dir/cudaprobe
  if ! "$cp" 2>&1 | grep -q usage; then
    say "FAIL cudaprobe_loads: $("$cp" 2>&1 | head -2 | tr '\n' ' ')"
    if command -v nvcc >/dev/null; then
      cp=/tmp/cudaprobe-host
      chk cudaprobe_rebuild_on_host 120 nvcc -std=c++20 -O2 -gencode arch=compute_90,code=sm_90 -cudart static -o "$cp" "$dir/cudaprobe.cu"
    fi
  else
    say "OK   cudaprobe_loads: the bundled binary starts"
  fi
  for c in info pinned bw hostfunc events graph ipc poolipc concurrent; do chk "cuda_$c" 40 "$cp" "$c"; done
  say "## Python"
  PYTHONUNBUFFERED=1 chk torch 90 python3 "$dir/torch_probe.py"
  say "## summary"
  say "$(grep -c '^OK' "$out_file") OK, $(grep -c '^FAIL' "$out_file") FAIL, $(grep -c '^SKIP' "$out_file") SKIP in $((SECONDS - t0)) s"
  local fails
  fails=$(grep '^FAIL' "$out_file" | sed 's/^/  /')
  [ -n "$fails" ] && say "$fails"
  return 0
}

case "${1:-}" in
  build) shift; build "$@" ;;
  run) shift; run_probe "$@" ;;
  *) echo "usage: $0 build [DIR] | run [OUTDIR]" >&2; exit 2 ;;
esac
