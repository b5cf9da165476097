// The memory a received frame's payloads are read into, chosen the same way by every receiver
// that reads payload bytes itself (the shm channel, the tcp frame decoder).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "frame.hpp"
#include "frame_codec.hpp"

namespace rankmesh {

// Which of a frame's tensors are a landing's, one bit per index (Landing::kMaxTensors).
using LandedTensors = std::uint64_t;

// Appends to `tensors` one tensor per descriptor, in order: `landing`'s own where it fits (may
// be null), a part of one shared block (payload_block.hpp) for the small ones read inline, fresh
// memory from `allocate` for the rest. All of it is made before any payload byte is read, so a
// receiver that fails here has consumed nothing. What `allocate` throws passes through; a tensor
// from it that is not on the host, of the described shape and dtype, with memory where it has
// bytes, throws Error(invalid_argument) naming the tensor. Returns which tensors are landed.
LandedTensors allocate_received_payloads(const FrameHeader& header,
                                         std::span<const TensorDescriptor> described,
                                         const Landing* landing, const Allocator& allocate,
                                         std::vector<Tensor>& tensors);

// The landed tensors of a frame still arriving from index `from` on (the one being filled
// included) when its landing is withdrawn (Channel::land(nullptr), after each recv()). The
// receive may go on — a wait in slices lands the same tensors again (relanded()) — or it has
// ended (a timeout) and the caller may use that memory again: before more of the frame is read,
// each withdrawn tensor not landed again gets memory of its own (divert_withdrawn()).
inline LandedTensors withdrawn_from(LandedTensors landed, std::size_t from) noexcept {
  return from >= Landing::kMaxTensors ? 0 : landed & (~LandedTensors{0} << from);
}

// Whether `landing` lands every `withdrawn` tensor of the frame `header` in the very memory it
// has been read into so far (`tensors`): the receive goes on, and so may the landing.
bool relanded(const Landing& landing, const FrameHeader& header,
              std::span<const TensorDescriptor> described, const std::vector<Tensor>& tensors,
              LandedTensors withdrawn) noexcept;

// Gives each `withdrawn` tensor memory of its own from `allocate` for the rest of its frame,
// the `done` bytes tensor `current` holds so far copied over (the frame stays whole, should its
// receive still take it), and clears `withdrawn`. What `allocate` throws passes through, the
// bits of the tensors not yet moved left set.
void divert_withdrawn(LandedTensors& withdrawn, std::span<const TensorDescriptor> described,
                      const Allocator& allocate, std::vector<Tensor>& tensors,
                      std::size_t current, std::size_t done);

}  // namespace rankmesh
