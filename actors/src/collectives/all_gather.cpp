// all_gather(v): every member's tensor, concatenated along `dim` on every member (all_gatherv:
// the sizes along `dim` may differ).
#include <cstring>
#include <vector>

#include "collectives/collectives.hpp"
#include "collectives/exchange.hpp"
#include "coordinator/payloads.hpp"
#include "tensor_ops.hpp"

namespace rankmesh::collectives {
namespace {

// Along dim 0 every member's part is one contiguous block of the result: the parts are read
// straight into their blocks (shm, tcp), so the result costs no gathering copy. This rank's
// block is filled first and sent from there: peers read pooled memory (LentMemory::lend), and
// in-process peers copy it into their blocks from there (a loan, not a copy for each).
Tensor gather_rows(const Call& call, const Tensor& input, OpCode op) {
  Shape shape;
  shape.push_back(input.shape()[0] * call.size());
  for (int i = 1; i < input.shape().rank(); ++i) shape.push_back(input.shape()[i]);
  Tensor out = call.rank().allocate(shape, input.dtype());
  const std::size_t block = input.nbytes();
  std::vector<Tensor> slots(static_cast<std::size_t>(call.size()));
  for (int member = 0; member < call.size(); ++member)
    slots[static_cast<std::size_t>(member)] = view_of(out, member * input.numel(), input.shape());
  const Tensor& own = slots[static_cast<std::size_t>(call.rank_in_group())];
  if (block != 0) std::memcpy(own.data(), input.data(), block);
  const std::vector<Tensor> all = exchange(call, own, true, op, &slots);
  for (int member = 0; member < call.size(); ++member)
    if (member != call.rank_in_group())
      check_matches(call, member, all[static_cast<std::size_t>(member)], input, 0, false);
  return out;
}

Tensor gather_along(Call& call, const Tensor& input, int dim, bool any_rows, OpCode op) {
  require_host_ready(call, input);
  dim = call.resolve_dim(input, dim);
  // all_gather's parts agree in every dimension (the result has size() equal blocks);
  // all_gatherv's may differ along `dim`.
  call.ask(CollectiveRequest(op).tensor(input, any_rows ? dim : -1).dim(dim));
  if (dim == 0 && !any_rows && call.size() > 1) return gather_rows(call, input, op);
  std::vector<Tensor> all = exchange(call, input, false, op);
  for (int member = 0; member < call.size(); ++member)
    if (member != call.rank_in_group())
      check_matches(call, member, all[static_cast<std::size_t>(member)], input, dim, any_rows);
  return concat(all, dim, call.rank().allocator());
}

}  // namespace

Tensor all_gather(GroupState& group, const Tensor& input, int dim) {
  Call call(group, "all_gather");
  return gather_along(call, input, dim, false, OpCode::all_gather);
}

Tensor all_gatherv(GroupState& group, const Tensor& input, int dim) {
  Call call(group, "all_gatherv");
  return gather_along(call, input, dim, true, OpCode::all_gatherv);
}

}  // namespace rankmesh::collectives
