// The memory a received frame's payloads are read into, chosen the same way by every receiver
// that reads payload bytes itself (the shm channel, the tcp frame decoder).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "frame.hpp"

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

// The landed tensors of the frame a receiver is reading, across the withdrawals of its landing
// (Channel::land(nullptr), after each recv()): one state and its rules for both receivers that
// read payload bytes themselves (FrameDecoder, ShmChannel). A withdrawn receive may go on — a
// wait in slices lands the same tensors again — or it has ended (a timeout) and the caller may
// use that memory again: before more of the frame is read, each withdrawn tensor not landed
// again gets memory of its own.
class LandedPayloads {
public:
  // A frame's payloads were allocated, `landed` of them a landing's (0: none yet).
  void start(LandedTensors landed) noexcept {
    landed_ = landed;
    withdrawn_ = 0;
  }
  // Channel::land(`landing`) while the frame whose header, descriptors and payloads are given
  // is being read from tensor `current` on (`reading`; else there is nothing to track): null
  // withdraws the landed tensors not yet complete; a landing with the very memory they have
  // been read into so far lands them again.
  void land(const Landing* landing, bool reading, std::size_t current, const FrameHeader& header,
            std::span<const TensorDescriptor> described,
            const std::vector<Tensor>& tensors) noexcept;
  // Whether divert() must run before more of the frame is read.
  bool withdrawn() const noexcept { return withdrawn_ != 0; }
  // Gives each withdrawn tensor memory of its own from `allocate` for the rest of its frame, the
  // `done` bytes tensor `current` holds so far copied over (the frame stays whole, should its
  // receive still take it). What `allocate` throws passes through (as allocate_received_payloads
  // names it), the tensors not yet moved still withdrawn.
  void divert(std::span<const TensorDescriptor> described, const Allocator& allocate,
              std::vector<Tensor>& tensors, std::size_t current, std::size_t done);

private:
  LandedTensors landed_ = 0;
  LandedTensors withdrawn_ = 0;  // of landed_, to divert before the next payload byte
};

}  // namespace rankmesh
