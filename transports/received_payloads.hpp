// The memory a received frame's payloads are read into, chosen the same way by every receiver
// that reads payload bytes itself (the shm channel, the tcp frame decoder).
#pragma once

#include <span>
#include <vector>

#include "frame.hpp"
#include "frame_codec.hpp"

namespace rankmesh {

// Appends to `tensors` one tensor per descriptor, in order: `landing`'s own where it fits (may
// be null), a part of one shared block (payload_block.hpp) for the small ones read inline, fresh
// memory from `allocate` for the rest. All of it is made before any payload byte is read, so a
// receiver that fails here has consumed nothing. What `allocate` throws passes through; a tensor
// from it that is not on the host, of the described shape and dtype, with memory where it has
// bytes, throws Error(invalid_argument) naming the tensor.
void allocate_received_payloads(const FrameHeader& header,
                                std::span<const TensorDescriptor> described,
                                const Landing* landing, const Allocator& allocate,
                                std::vector<Tensor>& tensors);

}  // namespace rankmesh
