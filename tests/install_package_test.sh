#!/usr/bin/env bash
# Installs rankmesh from BUILD_DIR into a temporary prefix and checks what an engine gets:
# exactly the public headers (those of lib/include and actors/include, and no others), none of
# which reaches for CAF, Asio, msgpack, a transport or any other internal header, or names an
# internal type; then builds and runs an outside project that finds it with
# find_package(rankmesh) and links rankmesh::rankmesh.
set -euo pipefail
build_dir=$1
consumer_src=$2
flags=${3:-}
source_dir=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "install_package: $*" >&2; exit 1; }

cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
test -x "$work/prefix/bin/rankmesh" || fail "bin/rankmesh was not installed"

# The public headers, one per line: what an engine uses (docs/migration.md says what left).
expected="call_site.hpp
cuda_backend.hpp
device.hpp
device_backend.hpp
dtype.hpp
error.hpp
event.hpp
graph_capture.hpp
group_coordinator.hpp
handle.hpp
layout.hpp
parallel_state.hpp
placement.hpp
rankmesh.hpp
reduce_op.hpp
runtime.hpp
stream.hpp
tensor.hpp
tensor_dict.hpp"
# cuda_backend.hpp is installed only with the CUDA backend (built where a toolkit was found).
include_dir="$work/prefix/include"
installed=$(cd "$include_dir" && find . -type f | sed 's|^\./||' | sort)
expected_installed=$expected
ls "$build_dir"/lib/cuda/librankmesh_cuda.so* >/dev/null 2>&1 || expected_installed=$(grep -v '^cuda_backend.hpp$' <<<"$expected")
[ "$installed" = "$(sed 's|^|rankmesh/|' <<<"$expected_installed")" ] ||
  fail "the installed headers differ from the public ones:"$'\n'"$(diff <(sed 's|^|rankmesh/|' <<<"$expected_installed") <(echo "$installed"))"
in_source=$(ls "$source_dir/lib/include/rankmesh" "$source_dir/actors/include/rankmesh" | grep '\.hpp$' | sort)
[ "$in_source" = "$expected" ] ||
  fail "lib/include and actors/include hold other headers than the public ones:"$'\n'"$(diff <(echo "$expected") <(echo "$in_source"))"

# Every include is the standard library's or another public header; nothing internal is named.
for header in "$include_dir"/rankmesh/*.hpp; do
  name=rankmesh/$(basename "$header")
  while read -r included; do
    case "$included" in
      \<caf/* | \<asio* | \<msgpack* | \<nlohmann/* | \<openssl/*) fail "$name includes $included" ;;
      \<*\>) ;;
      \"rankmesh/*\") [ -f "$include_dir/${included//\"/}" ] || fail "$name includes $included, which is not installed" ;;
      *) fail "$name includes $included, which is not a public header" ;;
    esac
  done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*\([<"][^>"]*[>"]\).*/\1/p' "$header")
  if grep -qE '\b(caf|asio|msgpack|nlohmann)::' "$header"; then fail "$name names a dependency's namespace"; fi
  for internal in Frame Channel MetaEntry SplitDict decode_metadata CodecLimits reduce_many \
                  ShmBroadcastRing TcpLink DataPlane RegistryClient RankActorConfig \
                  RankContext GroupOps GroupState Matcher; do
    if grep -qw -- "$internal" "$header"; then fail "$name names the internal $internal"; fi
  done
done

cmake -S "$consumer_src" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"

# The Python package, where the build made it: an outside script imports the installed copy
# (Debian's layout, <prefix>/lib/python3/dist-packages) and runs a world of two ranks.
if compgen -G "$build_dir/python/rankmesh/_rankmesh*.so" >/dev/null; then
  site="$work/prefix/lib/python3/dist-packages"
  compgen -G "$site/rankmesh/_rankmesh*.so" >/dev/null || fail "the Python module was not installed in $site"
  for stub in rankmesh/_rankmesh.pyi rankmesh/py.typed rankmesh/distributed/__init__.py; do
    [ -f "$site/$stub" ] || fail "$stub was not installed"
  done
  cat >"$work/outside.py" <<'PY'
import rankmesh, rankmesh.distributed as dist, torch
assert rankmesh.__file__.startswith(__import__("os").environ["SITE"]), rankmesh.__file__
def body():
    dist.initialize_model_parallel(2)
    return dist.tensor_model_parallel_all_reduce(torch.ones(4) * (dist.get_tensor_model_parallel_rank() + 1)).tolist()
with rankmesh.Runtime(2) as runtime:
    assert runtime.run(body) == [[3.0] * 4] * 2
print("installed python package ok")
PY
  preload=()
  if [ -n "$flags" ]; then  # a sanitized module needs the ASan runtime first in the process
    preload=(env "LD_PRELOAD=$(${CXX:-g++} -print-file-name=libasan.so) $(${CXX:-g++} -print-file-name=libstdc++.so)"
             ASAN_OPTIONS=detect_leaks=0)
  fi
  (cd "$work" && SITE="$site" PYTHONPATH="$site" "${preload[@]}" /usr/bin/python3 outside.py) ||
    fail "an outside script could not use the installed Python package"
fi
