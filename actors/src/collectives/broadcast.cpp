// broadcast: group rank `src`'s tensor into every member's, in place (vLLM's broadcast).
#include "collectives/collectives.hpp"
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
    // (below): a channel that copies on send gets the tensor itself, one that shares tensors
    // (inproc) a copy of its own, and the others, whose receivers read into memory of their
    // own (shm, tcp), one copy between them.
    Tensor shared;
    send_tensor_to_each_peer(call, OpCode::broadcast, seq, [&](int peer) {
      if (copied_on_send(call, tensor, peer)) return tensor;
      if (!call.rank().links().traits_to(call.group().global_rank(peer)).lends())
        return copy_for_peer(call, tensor);
      if (!shared.defined()) shared = copy_for_peer(call, tensor);
      return shared;
    });
    return tensor;
  }
  Frame& frame = call.frame();
  receive_collective(call, src, OpCode::broadcast, seq, frame);
  Tensor received = take_only_tensor(call, src, frame);
  if (!tensor.defined()) {  // nothing to fill: the caller gets the tensor that came
    tensor = std::move(received);
    return tensor;
  }
  if (received.dtype() != tensor.dtype() || !(received.shape() == tensor.shape()))
    throw call.payload_mismatch(src, received, to_string(tensor.shape()) + " " +
                                                   to_string(tensor.dtype()) +
                                                   " (the tensor this rank passed to fill)");
  if (received.nbytes() != 0) copy_into(call, received, tensor);
  return tensor;
}

}  // namespace rankmesh::collectives
