// gather: every member's tensor, concatenated along `dim` on group rank `dst`.
#include <vector>

#include "collectives/collectives.hpp"
#include "coordinator/fan_out.hpp"
#include "tensor_ops.hpp"

namespace rankmesh::collectives {

Tensor gather(GroupState& group, const Tensor& input, int dst, int dim) {
  Call call(group, "gather");
  require_host_ready(call, input);
  call.check_peer(dst, "dst");
  dim = call.resolve_dim(input, dim);
  // Only the root hears the others: a member that differs is named there, and the root fails
  // the group for the rest.
  call.ask(CollectiveRequest(OpCode::gather).tensor(input).dim(dim).root(dst));
  const std::uint64_t seq = begin_collective(call);
  if (call.rank_in_group() != dst) {
    Frame& frame = call.frame();
    frame.metadata.clear();
    frame.clear_payloads();
    // Copied for the root only where its channel would still read it after send() returns.
    append_payload(call, input, dst, false, frame);
    send_numbered(call, dst, OpCode::gather, seq, frame);
    return Tensor{};
  }
  std::vector<Tensor> parts(static_cast<std::size_t>(call.size()));
  parts[static_cast<std::size_t>(dst)] = input;
  receive_tensor_from_each_peer(call, OpCode::gather, seq, [&](Tensor part, int peer) {
    check_matches(call, peer, part, input, dim, false);
    parts[static_cast<std::size_t>(peer)] = std::move(part);
  });
  return concat(parts, dim, call.rank().allocator());
}

}  // namespace rankmesh::collectives
