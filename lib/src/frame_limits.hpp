// What a receiver accepts from a peer in one frame — the one set of limits for the metadata
// codec and every transport. A receiver checks what a frame announces against it before it
// allocates anything for the frame; a sender checks its frames against it too, so that a frame
// too big is refused where it is made.
#pragma once

#include <cstddef>
#include <cstdint>

#include "rankmesh/tensor.hpp"

namespace rankmesh {

struct FrameLimits {
  std::size_t max_metadata_bytes = std::size_t{16} << 20;    // the encoded metadata
  std::size_t max_tensors = 4096;                            // tensors of one frame
  std::uint64_t max_payload_bytes = std::uint64_t{4} << 30;  // their bytes, in total
  std::size_t max_depth = 32;          // nesting of dict paths and lists (bounds recursion)
  std::size_t max_entries = 1u << 20;  // metadata entries, list items and path keys, in total
  int max_rank = Shape::kMaxRank;      // dimensions of one tensor
};

}  // namespace rankmesh
