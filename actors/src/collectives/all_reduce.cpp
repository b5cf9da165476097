// all_reduce: reduce-scatter by owner, then all-gather. Each member owns one chunk of the
// flattened tensor; it adds the chunks of every member in ascending group-rank order, so the
// result equals a one-rank reference element by element, and sends the sum to every member.
#include <cstring>
#include <vector>

#include "collectives/collectives.hpp"
#include "coordinator/fan_out.hpp"
#include "reduce.hpp"

namespace rankmesh::collectives {
namespace {
// Element bounds of member `owner`'s chunk when `numel` elements are split `members` ways.
std::int64_t chunk_start(std::int64_t numel, int members, int owner) {
  return numel * owner / members;
}
}  // namespace

Tensor all_reduce(GroupState& group, const Tensor& input, ReduceOp op) {
  Call call(group, "all_reduce");
  check_reducible(input.dtype(), op);
  require_host_ready(call, input);
  if (call.size() == 1) return copy_for_peer(call, input);
  const std::uint64_t seq = begin_collective(call);
  const int self = call.rank_in_group();
  const std::int64_t numel = input.numel();
  const std::size_t element = dtype_size(input.dtype());
  auto start = [&](int owner) { return chunk_start(numel, call.size(), owner); };
  auto length = [&](int owner) { return start(owner + 1) - start(owner); };
  auto offset = [&](int owner) { return static_cast<std::size_t>(start(owner)) * element; };

  // Every owner gets its chunk of this rank's input.
  send_tensor_to_each_peer(call, OpCode::all_reduce, seq,
                           [&](int owner) { return flat_slice(call, input, start(owner), length(owner)); });
  std::vector<Tensor> chunks(static_cast<std::size_t>(call.size()));
  std::vector<const void*> addends(static_cast<std::size_t>(call.size()));
  addends[static_cast<std::size_t>(self)] = bytes_of(input) + offset(self);
  receive_tensor_from_each_peer(call, OpCode::all_reduce, seq, [&](Tensor chunk, int peer) {
    if (chunk.dtype() != input.dtype() || chunk.numel() != length(self))
      throw call.payload_mismatch(peer, chunk, std::to_string(length(self)) + " elements of " +
                                                   to_string(input.dtype()) +
                                                   " (ranks passed different tensors)");
    addends[static_cast<std::size_t>(peer)] = chunk.data();
    chunks[static_cast<std::size_t>(peer)] = std::move(chunk);
  });
  Tensor sum = call.rank().allocate(Shape{length(self)}, input.dtype());
  reduce_many(addends, sum.data(), static_cast<std::size_t>(length(self)), input.dtype(), op);

  // Every member gets this rank's sum; the result is every owner's sum in place.
  Tensor out = call.rank().allocate(input.shape(), input.dtype());
  std::memcpy(bytes_of(out) + offset(self), sum.data(), sum.nbytes());
  // `sum` is shared read-only by every peer; nobody writes it again.
  send_tensor_to_each_peer(call, OpCode::all_reduce, seq, [&](int) { return sum; });
  receive_tensor_from_each_peer(call, OpCode::all_reduce, seq, [&](Tensor owned, int owner) {
    if (owned.dtype() != input.dtype() || owned.numel() != length(owner))
      throw call.payload_mismatch(owner, owned, std::to_string(length(owner)) + " elements");
    std::memcpy(bytes_of(out) + offset(owner), owned.data(), owned.nbytes());
  });
  return out;
}

}  // namespace rankmesh::collectives
