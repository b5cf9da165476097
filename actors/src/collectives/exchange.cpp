#include "collectives/exchange.hpp"

#include "collectives/lent_memory.hpp"
#include "coordinator/fan_out.hpp"

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
  send_to_each_peer(call, op, seq,
                    [&](Frame& frame, int peer) { frame.tensors.push_back(lent.lend(mine, peer, pooled)); });
  std::vector<Tensor> all(static_cast<std::size_t>(call.size()));
  all[static_cast<std::size_t>(self)] = mine;
  Landing landing{call.group().id, static_cast<std::uint32_t>(op), seq, {}};
  Frame& frame = call.frame();
  for_each_peer_after_self(call, [&](int peer) {
    if (slots != nullptr) landing.tensors.assign(1, (*slots)[static_cast<std::size_t>(peer)]);
    receive_collective(call, peer, op, seq, frame, std::nullopt, slots != nullptr ? &landing : nullptr);
    all[static_cast<std::size_t>(peer)] = take_only_tensor(call, peer, frame);
  });
  lent.take_back(op, seq);
  return all;
}

}  // namespace rankmesh
