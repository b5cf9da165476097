// The unit every channel carries: one message of one group operation. A tensor dict is one frame:
// its msgpack metadata plus its tensors — or, in one process, the dict itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "frame_limits.hpp"  // FrameLimits, lib/src
#include "loan_gate.hpp"
#include "rankmesh/event.hpp"
#include "rankmesh/tensor.hpp"
#include "rankmesh/tensor_dict.hpp"

namespace rankmesh {

// Whether `t`'s bytes are in host memory and final (its ready event, if any, has completed):
// what a channel may copy, and a sender may copy for its peer, at once.
inline bool host_bytes_ready(const Tensor& t) {
  const auto& ready = t.ready_event();
  return t.device().type == DeviceType::cpu && (!ready || ready->query());
}

// What a frame belongs to, so that the receiver can match it against what it expects.
struct FrameHeader {
  std::uint32_t group = 0;  // the group's id, the same on every member
  std::uint32_t op = 0;     // the operation (the coordinator's numbering)
  std::uint64_t seq = 0;    // the group's sequence number for this operation
  std::int32_t src = 0;     // sender's global rank
};

// One tensor as a frame's descriptor of it says (frame_codec.hpp writes and parses them).
struct TensorDescriptor {
  Shape shape;
  DType dtype = DType::u8;
  Device device;
  bool lent = false;        // its payload travels as an address in the sender
  std::uint64_t nbytes = 0;  // of its payload
};

// A payload whose bytes become ready in order, a chunk at a time: a device tensor's bytes being
// copied into host memory chunk by chunk. A channel that writes payloads progressively
// (ChannelTraits::writes_progressively) sends chunk k once ready[k] has completed, while the
// later chunks are still being copied; any other channel waits for the tensor's ready event,
// which is the last chunk's, as for any payload.
struct ChunkedPayload {
  Tensor tensor;  // the host tensor, one of the frame's (found by its memory, not its index)
  std::size_t chunk_bytes = 0;                // every chunk's size but the last's
  std::vector<std::shared_ptr<Event>> ready;  // chunk k's bytes are in host memory

  // Whether `t` is this payload's tensor (the same bytes).
  bool is(const Tensor& t) const noexcept {
    return t.nbytes() != 0 && t.data() == tensor.data() && t.nbytes() == tensor.nbytes();
  }
};

struct Frame {
  FrameHeader header;
  std::vector<std::uint8_t> metadata;  // msgpack bytes; buffers circulate, never reallocated
  std::vector<Tensor> tensors;         // payloads, in metadata order
  // Payloads among `tensors` that become ready chunk by chunk; empty for host tensors. Whoever
  // fills `tensors` clears it too. An entry whose tensor is not among `tensors` is ignored (it
  // holds its memory, so no other tensor can be mistaken for it).
  std::vector<ChunkedPayload> chunked;
  // Indices of payloads among `tensors` that are the caller's own memory, which the caller may
  // change once send() returns: a channel whose traits say copies_while_sending copies them
  // before it returns, while its receiver is already reading (others never get any). An index
  // that is not the caller's memory only costs a copy. Whoever fills `tensors` clears it too.
  std::vector<std::uint32_t> borrowed;
  // A tensor dict handed over whole, holding `tensors` in place of the caller's (its metadata
  // is then empty): only over a channel whose traits say shares_tensors, the one kind that
  // carries it. Such a dict is neither encoded nor decoded: no schema cache sees it.
  std::optional<TensorDict> dict;
  // Set where `tensors` are the sender's own memory loaned (LoanGate): read them only under a
  // claim on it. Only over a channel whose traits say shares_tensors, the one kind that carries
  // it.
  std::shared_ptr<LoanGate> loan;

  // Calls `each(index)` for the borrowed indices that name a tensor of the frame, in increasing
  // order, each once: an out-of-range one marks nothing, and one out of order or repeated is
  // skipped (a channel that copied a payload must not copy its own copy again).
  template <class Each>
  void for_each_borrowed(Each&& each) const {
    std::size_t next = 0;  // the lowest index still allowed
    for (const std::uint32_t index : borrowed) {
      if (index >= tensors.size() || index < next) continue;
      next = std::size_t{index} + 1;
      each(static_cast<std::size_t>(index));
    }
  }

  // Empties the payloads and what describes them (metadata and header stay).
  void clear_payloads() noexcept {
    tensors.clear();
    chunked.clear();
    borrowed.clear();
    dict.reset();
    loan.reset();
  }
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

  // Receivers track landed tensors as one bit each (received_payloads.hpp).
  static constexpr std::size_t kMaxTensors = 64;

  bool fits(const FrameHeader& header, std::size_t index, const Shape& shape,
            DType dtype) const noexcept {
    return header.group == group && header.op == op && header.seq == seq &&
           index < tensors.size() && index < kMaxTensors && tensors[index].defined() &&
           tensors[index].shape() == shape && tensors[index].dtype() == dtype;
  }
};

}  // namespace rankmesh
