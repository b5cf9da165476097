// all_reduce: reduce-scatter by owner, then all-gather. Each member owns one chunk of the
// flattened tensor; it adds the chunks of every member in ascending group-rank order, so the
// result equals a one-rank reference element by element, writing the sum straight into its
// chunk of the result; then every owner's sum is read straight into its place in every
// member's result. Over shm and tcp nothing is copied but by the transfers themselves: peers
// read each member's input and sums in place (exchange.hpp).
#include <cstring>
#include <vector>

#include "collectives/collectives.hpp"
#include "collectives/exchange.hpp"
#include "coordinator/payloads.hpp"
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
  const int self = call.rank_in_group();
  const std::int64_t numel = input.numel();
  const std::size_t element = dtype_size(input.dtype());
  auto start = [&](int owner) { return chunk_start(numel, call.size(), owner); };
  auto length = [&](int owner) { return start(owner + 1) - start(owner); };
  auto offset = [&](int owner) { return static_cast<std::size_t>(start(owner)) * element; };

  // Every owner gets its chunk of this rank's input: read in place, or a copy it may keep.
  const bool input_in_place = peers_read_in_place(call, input);
  std::vector<Tensor> chunks = exchange_parts(
      call, OpCode::all_reduce, input_in_place, [&](int owner) {
        return input_in_place ? flat_view(input, start(owner), length(owner))
                              : flat_slice(call, input, start(owner), length(owner));
      });
  std::vector<const void*> addends(static_cast<std::size_t>(call.size()));
  addends[static_cast<std::size_t>(self)] = bytes_of(input) + offset(self);
  for (int peer = 0; peer < call.size(); ++peer) {
    if (peer == self) continue;
    const Tensor& chunk = chunks[static_cast<std::size_t>(peer)];
    if (chunk.dtype() != input.dtype() || chunk.numel() != length(self))
      throw call.payload_mismatch(peer, chunk, std::to_string(length(self)) + " elements of " +
                                                   to_string(input.dtype()) +
                                                   " (ranks passed different tensors)");
    addends[static_cast<std::size_t>(peer)] = chunk.data();
  }
  Tensor out = call.rank().allocate(input.shape(), input.dtype());
  reduce_many(addends, bytes_of(out) + offset(self), static_cast<std::size_t>(length(self)),
              input.dtype(), op);
  chunks.clear();  // back to the pool before the result's other chunks arrive

  // Every member gets this rank's sum, each owner's sum lands in its chunk of the result.
  std::vector<Tensor> slots(static_cast<std::size_t>(call.size()));
  for (int owner = 0; owner < call.size(); ++owner)
    slots[static_cast<std::size_t>(owner)] = flat_view(out, start(owner), length(owner));
  const Tensor& sum = slots[static_cast<std::size_t>(self)];
  const bool sum_in_place = peers_read_in_place(call, sum);
  // Without in-place reads one copy serves every peer: nobody writes it again.
  const Tensor shared = sum_in_place ? sum : copy_for_peer(call, sum);
  std::vector<Tensor> sums = exchange_parts(
      call, OpCode::all_reduce, sum_in_place, [&](int) { return shared; }, &slots);
  for (int owner = 0; owner < call.size(); ++owner) {
    if (owner == self) continue;
    const Tensor& owned = sums[static_cast<std::size_t>(owner)];
    const Tensor& slot = slots[static_cast<std::size_t>(owner)];
    if (owned.dtype() != input.dtype() || owned.numel() != length(owner))
      throw call.payload_mismatch(owner, owned, std::to_string(length(owner)) + " elements");
    if (owned.nbytes() != 0 && owned.data() != slot.data())  // did not land in place
      std::memcpy(slot.data(), owned.data(), owned.nbytes());
  }
  return out;
}

}  // namespace rankmesh::collectives
