// broadcast: group rank `src`'s tensor into every member's, in place (vLLM's broadcast).
#include <cstring>

#include "collectives/collectives.hpp"
#include "collectives/lent_memory.hpp"
#include "coordinator/fan_out.hpp"
#include "coordinator/payloads.hpp"

namespace rankmesh::collectives {
namespace {

// The root's own memory, loaned (`loaned`, a ready host tensor; LentMemory::lend_gated), read
// under the claim on its gate into memory of this rank's: `tensor` itself where it is a host
// tensor ready to be written that fits (nothing to copy after), else memory of its own. The claim
// covers the memcpy alone — whatever else the read needs is ready first — since the root, should
// its broadcast fail meanwhile, waits for it before its caller may change that memory.
Tensor read_loan(const Call& call, int src, const Frame& frame, const Tensor& loaned,
                 const Tensor& tensor) {
  const bool fills = tensor.defined() && host_bytes_ready(tensor) &&
                     tensor.dtype() == loaned.dtype() && tensor.shape() == loaned.shape();
  Tensor into = fills ? tensor : call.rank().allocate(loaned.shape(), loaned.dtype());
  const ClaimedLoan claim(call, src, frame);
  std::memcpy(into.data(), loaned.data(), loaned.nbytes());
  return into;
}

}  // namespace

Tensor broadcast(GroupState& group, Tensor& tensor, int src) {
  Call call(group, "broadcast");
  call.check_peer(src, "src");
  if (call.size() == 1) return tensor;
  // A receiver that passes no tensor takes whatever comes (any dtype and shape).
  call.ask(CollectiveRequest(OpCode::broadcast).tensor(tensor).root(src));
  const std::uint64_t seq = begin_collective(call);
  if (call.rank_in_group() == src) {
    // The caller may change its tensor once this returns, and a receiver may return what it got
    // (below). Peers in this process (inproc) get it loaned behind a gate, which they claim while
    // they copy it into their own tensor and which a failed broadcast revokes (LentMemory::
    // lend_gated; 16 MiB: 3.2 -> 0.6 ms on 2 ranks, 8.9 -> 1.8 ms on 4, against a copy made for
    // each, which it then copied again); a single shm peer gets it borrowed (its channel copies
    // it while the peer reads: 16 MiB 2.6-2.8 -> 1.6-2.0 ms against reading it in place); the
    // others get the tensor lent where their channel reads it after send() and taken back before
    // returning, or one copy between them (LentMemory::lend; shm peers pinning pages of the
    // caller's for three readers cost more than a copy first: 8.5 against 6.3 ms).
    PeerLinks& links = call.rank().links();
    int pinning_readers = 0;
    for_each_peer(call, [&](int peer) {
      if (links.shares_memory_with(call.group().global_rank(peer))) ++pinning_readers;
    });
    LentMemory lent(call);
    send_to_each_peer(call, OpCode::broadcast, seq, [&](Frame& frame, int peer) {
      const int global = call.group().global_rank(peer);
      const ChannelTraits& traits = links.traits_to(global);
      if (!traits.lends()) {
        frame.tensors.push_back(lent.lend_gated(tensor, peer, frame));
      } else if (pinning_readers == 1 && links.shares_memory_with(global) &&
                 traits.copies_while_sending && copied_for_peer(traits, tensor)) {
        // The one shm reader: the channel copies while the peer reads (below).
        frame.borrowed.push_back(0);
        frame.tensors.push_back(tensor);
      } else {
        frame.tensors.push_back(lent.lend(tensor, peer, false));
      }
    });
    lent.take_back(OpCode::broadcast, seq);
    return tensor;
  }
  // A host tensor to fill is where the payload lands (shm, tcp read straight into it): no copy
  // after. It is written only by a frame of this very broadcast (group, op, seq) whose shape and
  // dtype match; anything else arrives in memory of its own and is checked below.
  Landing landing{call.group().id, static_cast<std::uint32_t>(OpCode::broadcast), seq, {}};
  const bool lands = tensor.defined() && tensor.device().type == DeviceType::cpu &&
                     !tensor.ready_event() && tensor.nbytes() != 0;
  if (lands) landing.tensors.push_back(tensor);
  Frame& frame = call.frame();
  receive_collective(call, src, OpCode::broadcast, seq, frame, std::nullopt,
                     lands ? &landing : nullptr);
  Tensor received = take_only_tensor(call, src, frame);
  if (frame.loan) received = read_loan(call, src, frame, received, tensor);
  if (!tensor.defined()) {  // nothing to fill: the caller gets the tensor that came
    tensor = std::move(received);
    return tensor;
  }
  if (received.dtype() != tensor.dtype() || !(received.shape() == tensor.shape()))
    throw call.payload_mismatch(src, received, to_string(tensor.shape()) + " " +
                                                   to_string(tensor.dtype()) +
                                                   " (the tensor this rank passed to fill)");
  if (received.nbytes() != 0 && received.data() != tensor.data()) copy_into(call, received, tensor);
  return tensor;
}

}  // namespace rankmesh::collectives
