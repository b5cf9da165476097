// Decodes arbitrary bytes as a stream of frames, fed whole and in pieces; see frame_decoding.hpp
// for what must hold.
#include <cstdint>
#include <span>

#include "frame_decoding.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  rankmesh::fuzz::decode_both_ways(std::span<const std::uint8_t>(data, size), nullptr);
  return 0;
}
