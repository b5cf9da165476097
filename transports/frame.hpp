// The unit every channel carries: one message of one group operation. A tensor dict is one frame:
// its msgpack metadata plus its tensors.
#pragma once

#include <cstdint>
#include <vector>

#include "rankmesh/tensor.hpp"

namespace rankmesh {

// What a frame belongs to, so that the receiver can match it against what it expects.
struct FrameHeader {
  std::uint32_t group = 0;  // the group's id, the same on every member
  std::uint32_t op = 0;     // the operation (the coordinator's numbering)
  std::uint64_t seq = 0;    // the group's sequence number for this operation
  std::int32_t src = 0;     // sender's global rank
};

struct Frame {
  FrameHeader header;
  std::vector<std::uint8_t> metadata;  // msgpack bytes; buffers circulate, never reallocated
  std::vector<Tensor> tensors;         // payloads, in metadata order
};

}  // namespace rankmesh
