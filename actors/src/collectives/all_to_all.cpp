// all_to_all: each member splits its tensor along dim 0 into one part per member and gets the
// parts meant for it, concatenated in group-rank order. The counts each rank receives come
// with the data.
#include <vector>

#include "collectives/collectives.hpp"
#include "coordinator/fan_out.hpp"
#include "tensor_ops.hpp"

namespace rankmesh::collectives {

Tensor all_to_all(GroupState& group, const Tensor& input, std::span<const std::int64_t> send_counts) {
  Call call(group, "all_to_all");
  require_host_ready(call, input);
  call.resolve_dim(input, 0);
  if (static_cast<int>(send_counts.size()) != call.size())
    throw Error(Errc::invalid_argument, call.where() + ": " + std::to_string(send_counts.size()) +
                                            " send counts for a group of " +
                                            std::to_string(call.size()));
  std::vector<std::int64_t> offsets(send_counts.size() + 1, 0);
  for (std::size_t peer = 0; peer < send_counts.size(); ++peer) {
    if (send_counts[peer] < 0) throw Error(Errc::invalid_argument, call.where() + ": negative count");
    offsets[peer + 1] = offsets[peer] + send_counts[peer];
  }
  if (offsets.back() != input.shape()[0])
    throw Error(Errc::invalid_argument, call.where() + ": send counts sum to " +
                                            std::to_string(offsets.back()) + ", input has " +
                                            std::to_string(input.shape()[0]) + " rows");
  call.ask(CollectiveRequest(OpCode::all_to_all).tensor(input, 0));
  const std::uint64_t seq = begin_collective(call);
  auto rows_for = [&](int peer) {
    const auto at = static_cast<std::size_t>(peer);
    return narrow(input, 0, offsets[at], send_counts[at], call.rank().allocator());
  };
  send_tensor_to_each_peer(call, OpCode::all_to_all, seq, rows_for);
  std::vector<Tensor> parts(static_cast<std::size_t>(call.size()));
  parts[static_cast<std::size_t>(call.rank_in_group())] = rows_for(call.rank_in_group());
  receive_tensor_from_each_peer(call, OpCode::all_to_all, seq, [&](Tensor part, int peer) {
    check_matches(call, peer, part, input, 0, true);
    parts[static_cast<std::size_t>(peer)] = std::move(part);
  });
  return concat(parts, 0, call.rank().allocator());
}

}  // namespace rankmesh::collectives
