#!/usr/bin/env bash
# Builds here, for the GPU host (an H200: sm_90 code plus compute_90 PTX), everything
# scripts/gpu_check.sh runs there, and packs it into one folder that travels on its own:
#
#   scripts/gpu_bundle.sh [DIR]     (default DIR: build-gpu/bundle; the build itself: build-gpu/)
#
# The folder holds the binaries (stripped): rankmesh-gpu-tests (and rankmesh-gpu-ranks, the
# program its cross-process cases launch) where tests/gpu builds them, rankmesh-pipeline, the
# rankmesh tool, rankmesh-device-bench, and the probes of scripts/gpu_probe.sh (sysprobe,
# cudaprobe); librankmesh and librankmesh_cuda; every other library the binaries need that is
# not part of the C/C++ runtime (CAF, OpenSSL's libcrypto: the GPU host has no Debian packages);
# and gpu_check.sh. Every binary and library has the RUNPATH $ORIGIN, so it finds the others in
# its folder with LD_LIBRARY_PATH pointing elsewhere (/usr/local/nvidia/lib64, for libcuda.so.1,
# on the GPU host). The CUDA runtime is linked statically: only the driver is needed there.
# Fails when the folder is 60 MiB or more (the device tool carries at most 64 MiB).
#
# Then, with the device tool (see docs/gpu-host.md), from the repository root:
#   run(command="cd build-gpu/bundle && bash gpu_check.sh $OUT", carry=["build-gpu/bundle"], ...)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$root/build-gpu
bundle=${1:-$build/bundle}
limit=$((60 * 1024 * 1024))

if [ -z "${CMAKE_CXX_COMPILER_LAUNCHER:-}" ] && command -v ccache >/dev/null; then
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CMAKE_CUDA_COMPILER_LAUNCHER=ccache
fi

# Every binary and library lands in build-gpu/bin and is linked with the RUNPATH $ORIGIN alone
# (no build-tree paths): what runs in the build tree (doctest's test discovery after each link)
# finds its libraries exactly as the bundle will.
cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DRANKMESH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_RUNTIME_LIBRARY=Static \
  -DRANKMESH_TESTS=ON \
  -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$build/bin" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$build/bin" \
  -DCMAKE_SKIP_BUILD_RPATH=OFF -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN'

# rankmesh-tool's output name is `rankmesh` (tools/rankmesh/CMakeLists.txt).
targets=(rankmesh-pipeline rankmesh-tool rankmesh-device-bench)
programs=(rankmesh-pipeline rankmesh rankmesh-device-bench)
known=$(ninja -C "$build" -t targets all | cut -d: -f1)
for t in rankmesh-gpu-tests rankmesh-gpu-ranks; do
  if grep -qx "$t" <<<"$known"; then
    targets+=("$t")
    programs+=("$t")
  else
    echo "gpu_bundle: no target $t in this tree (tests/gpu not there yet): not bundled"
  fi
done
grep -qx rankmesh-device-bench <<<"$known" || {
  echo "gpu_bundle: no target rankmesh-device-bench: the CUDA backend (rankmesh_cuda) was not configured" >&2
  exit 1
}
cmake --build "$build" -j2 --target "${targets[@]}"

# A folder to replace: an earlier bundle (marked by .gpu-bundle), an empty one, or none.
if [ -d "$bundle" ] && [ -n "$(ls -A "$bundle")" ] && [ ! -f "$bundle/.gpu-bundle" ]; then
  echo "gpu_bundle: $bundle is not empty and holds no earlier bundle: not replacing it" >&2
  exit 1
fi
rm -rf "$bundle"
mkdir -p "$bundle"
bundle=$(cd "$bundle" && pwd)
echo "made by scripts/gpu_bundle.sh: replaced by its next run" >"$bundle/.gpu-bundle"
"$root/scripts/gpu_probe.sh" build "$bundle" >/dev/null  # sysprobe, cudaprobe (+ their sources)
for p in "${programs[@]}"; do
  cp "$build/bin/$p" "$bundle/"
  strip "$bundle/$p"
done
# The libraries under their sonames (the names binaries ask for), as plain files.
for lib in librankmesh librankmesh_cuda; do
  soname=$(readelf -d "$build/bin/$lib.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  cp -L "$build/bin/$lib.so" "$bundle/$soname"
  strip --strip-unneeded "$bundle/$soname"
done

# The C and C++ runtime stays the host's (glibc 2.39 and GLIBCXX_3.4.33 there, newer than ours:
# docs/gpu-host.md); anything else a binary needs comes along.
system='^(linux-vdso\.so|libc\.so|libm\.so|libstdc\+\+\.so|libgcc_s\.so|ld-linux|libpthread\.so|libdl\.so|librt\.so)'
elves=()
for f in "$bundle"/*; do
  [ -f "$f" ] && head -c4 "$f" | grep -q 'ELF' && elves+=("$f")
done
for f in "${elves[@]}"; do
  while read -r name _ path _; do
    if [ "$path" = "not" ]; then
      echo "gpu_bundle: $(basename "$f") needs $name, which is not found here" >&2
      exit 1
    fi
    [[ "$name" =~ $system ]] && continue
    [ -e "$bundle/$name" ] || cp -L "$path" "$bundle/$name"
  done < <(env -u LD_LIBRARY_PATH ldd "$f" 2>/dev/null | grep '=>')
done
cp "$root/scripts/gpu_check.sh" "$bundle/gpu_check.sh"
chmod +x "$bundle/gpu_check.sh"

# Verify what the GPU host will see: each binary and library says RUNPATH $ORIGIN (or is
# static), and resolves every library outside the C/C++ runtime from the bundle itself.
bad=0
for f in "$bundle"/*; do
  [ -f "$f" ] && head -c4 "$f" | grep -q 'ELF' || continue
  base=$(basename "$f")
  if readelf -d "$f" | grep -q '(NEEDED)'; then
    case "$base" in
      libcaf_*|libcrypto*|libssl*) ;;  # copied as built by Debian: they need only the C/C++ runtime
      *) if ! readelf -d "$f" | grep -Eq '\((RUNPATH|RPATH)\).*\[\$ORIGIN\]'; then
           echo "gpu_bundle: $base lacks the RUNPATH \$ORIGIN" >&2; bad=1
         fi ;;
    esac
  fi
  while read -r name _ path _; do
    [[ "$name" =~ $system ]] && continue
    if [ "$(dirname "$(realpath "$path")")" != "$(realpath "$bundle")" ]; then
      echo "gpu_bundle: $base resolves $name to $path, not to the bundle" >&2; bad=1
    fi
  done < <(env -u LD_LIBRARY_PATH ldd "$f" 2>/dev/null | grep '=>')
done
[ "$bad" = 0 ] || exit 1

size=$(du -sb "$bundle" | cut -f1)
echo "gpu_bundle: $bundle, $(ls "$bundle" | wc -l) files, $((size / 1024 / 1024)) MiB ($size bytes):"
ls -l "$bundle" | tail -n +2 | awk '{printf "  %10d  %s\n", $5, $9}'
if [ "$size" -ge "$limit" ]; then
  echo "gpu_bundle: the bundle is 60 MiB or more; the device tool carries at most 64 MiB" >&2
  exit 1
fi
