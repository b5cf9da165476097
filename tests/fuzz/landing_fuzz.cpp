// The landing path: frames whose payloads are read straight into the caller's tensors (a
// Landing, as Channel::land sets up for all_gather and recv_tensor_dict into buffers). The first
// bytes describe the landing — which group, operation and sequence number it expects and its
// tensors' dtypes and shapes — the rest is the stream. Decoded whole and in pieces, a frame's
// tensor must be the landing's own exactly where the landing fits it, and every frame must
// re-encode to its bytes; ASan sees any write beyond a landing tensor (frame_decoding.hpp).
#include <cstdint>
#include <span>

#include "frame_decoding.hpp"

using namespace rankmesh;

namespace {

// Reads the landing's description from the front of `bytes`, consuming it; false when too short.
bool read_landing(std::span<const std::uint8_t>& bytes, Landing& landing) {
  auto next = [&](std::uint8_t& value) {
    if (bytes.empty()) return false;
    value = bytes.front();
    bytes = bytes.subspan(1);
    return true;
  };
  std::uint8_t count = 0, group = 0, op = 0, seq = 0;
  if (!next(count) || !next(group) || !next(op) || !next(seq)) return false;
  landing.group = group;
  landing.op = op;
  landing.seq = seq;
  for (int t = 0; t < count % 5; ++t) {
    std::uint8_t dtype = 0, rank = 0;
    if (!next(dtype) || !next(rank)) return false;
    Shape shape;
    for (int d = 0; d < rank % 4; ++d) {
      std::uint8_t dim = 0;
      if (!next(dim)) return false;
      shape.push_back(dim % 9);
    }
    Tensor tensor = Tensor::empty(shape, *dtype_from_code(dtype % kDTypeCount));
    landing.tensors.push_back(std::move(tensor));
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> bytes(data, size);
  Landing landing;
  if (!read_landing(bytes, landing)) return 0;
  fuzz::decode_both_ways(bytes, &landing);
  return 0;
}
