// broadcast: group rank `src`'s tensor into every member's, in place (vLLM's broadcast).
#include "collectives/collectives.hpp"
#include "collectives/lent_memory.hpp"
#include "coordinator/fan_out.hpp"
#include "coordinator/payloads.hpp"

namespace rankmesh::collectives {

Tensor broadcast(GroupState& group, Tensor& tensor, int src) {
  Call call(group, "broadcast");
  call.check_peer(src, "src");
  if (call.size() == 1) return tensor;
  // A receiver that passes no tensor takes whatever comes (any dtype and shape).
  call.ask(CollectiveRequest(OpCode::broadcast).tensor(tensor).root(src));
  const std::uint64_t seq = begin_collective(call);
  if (call.rank_in_group() == src) {
    // The caller may change its tensor once this returns, and a receiver may return what it got
    // (below). Peers in this process (inproc), which keep what they get, get a copy each; the
    // others get the tensor lent where their channel reads it after send() and taken back before
    // returning, or one copy between them (LentMemory::lend): shm peers read it in place only
    // where there is one of them (16 MiB to one peer: ~4.1 against ~4.7 ms with a copy; to three:
    // 8.5 against 6.3 ms).
    PeerLinks& links = call.rank().links();
    int pinning_readers = 0;
    for_each_peer(call, [&](int peer) {
      if (links.shares_memory_with(call.group().global_rank(peer))) ++pinning_readers;
    });
    LentMemory lent(call);
    send_tensor_to_each_peer(call, OpCode::broadcast, seq, [&](int peer) {
      if (!links.traits_to(call.group().global_rank(peer)).lends())
        return copy_for_peer(call, tensor);
      return lent.lend(tensor, peer, pinning_readers == 1);
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
