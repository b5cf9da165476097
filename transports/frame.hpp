// The unit every channel carries: one message of one group operation. A tensor dict is one frame:
// its msgpack metadata plus its tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "frame_limits.hpp"  // FrameLimits, lib/src
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

// Where a receiver wants the payloads of one particular frame: the frame with this group,
// operation and sequence number gets tensors[i] as its i-th payload when shape and dtype agree,
// read straight into it (all_gather lands each peer's part in its place in the result). Any
// other frame, or a payload that does not fit, gets fresh memory as usual.
struct Landing {
  std::uint32_t group = 0;
  std::uint32_t op = 0;
  std::uint64_t seq = 0;
  std::vector<Tensor> tensors;  // host tensors

  bool fits(const FrameHeader& header, std::size_t index, const Shape& shape,
            DType dtype) const noexcept {
    return header.group == group && header.op == op && header.seq == seq &&
           index < tensors.size() && tensors[index].defined() &&
           tensors[index].shape() == shape && tensors[index].dtype() == dtype;
  }
};

}  // namespace rankmesh
