#include "collectives/exchange.hpp"

#include "collectives/lent_memory.hpp"
#include "coordinator/fan_out.hpp"
#include "coordinator/payloads.hpp"

namespace rankmesh {

Tensor view_of(const Tensor& t, std::int64_t start, const Shape& shape) {
  std::byte* at = static_cast<std::byte*>(t.data()) +
                  static_cast<std::size_t>(start) * dtype_size(t.dtype());
  return Tensor::wrap(shape.numel() != 0 ? at : nullptr, shape, t.dtype(), Device{},
                      [keep = t](void*) {});
}

std::vector<Tensor> exchange(const Call& call, const Tensor& mine, bool pooled, OpCode op,
                             const std::vector<Tensor>* slots) {
  const std::uint64_t seq = begin_collective(call);
  const int self = call.rank_in_group();
  // The caller may reuse `mine` once this returns.
  LentMemory lent(call);
  // With slots, every member copies what did not land into its slot and lets go of it before it
  // takes back what it lent: an in-process peer may then be loaned `mine` itself.
  const bool receivers_let_go = slots != nullptr;
  send_to_each_peer(call, op, seq, [&](Frame& frame, int peer) {
    frame.tensors.push_back(lent.lend(mine, peer, pooled, receivers_let_go));
  });
  std::vector<Tensor> all(static_cast<std::size_t>(call.size()));
  all[static_cast<std::size_t>(self)] = mine;
  Landing landing{call.group().id, static_cast<std::uint32_t>(op), seq, {}};
  Frame& frame = call.frame();
  for_each_peer_after_self(call, [&](int peer) {
    const Tensor* slot = slots != nullptr ? &(*slots)[static_cast<std::size_t>(peer)] : nullptr;
    if (slot != nullptr) landing.tensors.assign(1, *slot);
    receive_collective(call, peer, op, seq, frame, std::nullopt, slot != nullptr ? &landing : nullptr);
    Tensor& part = all[static_cast<std::size_t>(peer)] = take_only_tensor(call, peer, frame);
    // Did not land in place (inproc, stashed): copied there now. A part of another shape stays
    // as it came, for the caller to refuse.
    if (slot != nullptr && part.data() != slot->data() && part.dtype() == slot->dtype() &&
        part.shape() == slot->shape() && part.device() == slot->device()) {
      if (part.nbytes() != 0) copy_into(call, part, *slot);
      part = *slot;
    }
  });
  lent.take_back(op, seq);
  return all;
}

}  // namespace rankmesh
