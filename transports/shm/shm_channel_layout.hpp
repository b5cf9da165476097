// The inside of a ShmChannel that its three source files share: the control page at the start of
// the segment, the receiver's frame in progress, and how either side waits. Internal to
// transports/shm/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "frame_codec.hpp"
#include "shm/shm_channel.hpp"

namespace rankmesh::shm {

// What the receiver found out about reading the sender's memory with process_vm_readv.
enum : std::uint32_t { kCmaUnknown = 0, kCmaWorks = 1, kCmaDenied = 2 };

// A side moving a payload through the ring tells the other every this many bytes (or every
// quarter of a smaller ring), so that the receiver copies out while the sender still copies in.
constexpr std::size_t kStreamChunk = std::size_t{64} << 10;

inline std::size_t stream_chunk(std::size_t ring_bytes) noexcept {
  return ring_bytes / 4 < kStreamChunk ? ring_bytes / 4 : kStreamChunk;
}

}  // namespace rankmesh::shm

namespace rankmesh {

// The first page of the segment. Plain integers, accessed through std::atomic_ref where both
// sides touch them. Each counter sits on its own cache line with the words its writer owns.
struct ShmChannel::Control {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t control_bytes;
  std::uint64_t ring_bytes;
  std::int32_t receiver_pid;
  std::int32_t sender_pid;      // set (last) when the sender has attached
  std::uint32_t attach_claim;   // 0 -> 1 by the one sender that may attach
  std::uint32_t cma_state;      // kCma*
  std::uint64_t probe_address;  // a word in the sender the receiver tries to read
  std::uint64_t probe_value;
  std::uint32_t withdrawn;      // the sender no longer lends payloads: do not read them
  std::uint32_t unused0;
  alignas(64) std::uint64_t tail;  // written by the sender
  std::uint32_t data_epoch;        // bumped by the sender: "bytes or news for the receiver"
  std::uint64_t ring_in_use;       // written by the sender while the ring is empty (it grows)
  std::uint32_t sender_cpu;        // where the sender last ran (shm::Cores)
  // Bytes of lent payloads, counted over the channel's life in frame order, that the receiver
  // may read (a borrowed payload's copy advances it a part at a time).
  std::uint64_t lent_ready;
  alignas(64) std::uint64_t head;  // written by the receiver
  std::uint32_t space_epoch;       // bumped by the receiver: "space or news for the sender"
  std::uint32_t receiver_cpu;      // where the receiver last ran (shm::Cores)
  // Read by every notify, written only by a side about to park: a line of their own, so that
  // neither side reads the line the other writes on every message (the sender's notify read
  // data_sleepers beside the head, taking that line from the receiver's core each message).
  alignas(64) std::uint32_t data_sleepers;  // receivers parked on data_epoch
  std::uint32_t space_sleepers;             // senders parked on space_epoch
  alignas(64) shm::Closure closure;
};


struct ShmChannel::Incoming {
  bool active = false;
  Frame frame;
  std::vector<TensorDescriptor> described;  // its tensors, from the descriptors
  std::uint64_t end = 0;   // ring position where the record ends
  std::size_t tensor = 0;  // the payload in progress
  std::size_t done = 0;    // its bytes taken so far (or of its reference)
  std::size_t pulled = 0;  // a lent payload's bytes read so far
  LandedPayloads landed;   // which of its tensors are a landing's, withdrawn or not
  std::uint8_t reference[kLentPayloadBytes] = {};
};

// ---- set-up -------------------------------------------------------------------------------

// Spins, then parks on the futex word `epoch` in slices of liveness_interval, checking the peer
// between slices.
template <class Ready>
bool ShmChannel::wait(Ready&& ready, std::uint32_t* epoch, std::uint32_t* sleepers,
                      Deadline deadline) {
  const shm::Cores cores = receiver_ ? shm::Cores{&control_->receiver_cpu, &control_->sender_cpu}
                                     : shm::Cores{&control_->sender_cpu, &control_->receiver_cpu};
  return shm::wait_for(ready, *epoch, *sleepers, deadline,
                       options_.spin_for.value_or(spin_budget()), options_.liveness_interval,
                       [this] { check_peer(true); }, cores);
}

}  // namespace rankmesh
