// barrier: everyone reports to group rank 0, which releases everyone once all have arrived.
#include "collectives/collectives.hpp"
#include "coordinator/fan_out.hpp"

namespace rankmesh::collectives {

void barrier(GroupState& group) {
  Call call(group, "barrier");
  if (call.size() == 1) return;
  call.ask(CollectiveRequest(OpCode::barrier));
  const std::uint64_t seq = begin_collective(call);
  constexpr int kGatherer = 0;
  if (call.rank_in_group() != kGatherer) {
    Frame& frame = call.frame();
    frame.metadata.clear();
    frame.tensors.clear();
    send_numbered(call, kGatherer, OpCode::barrier, seq, frame);
    receive_collective(call, kGatherer, OpCode::barrier, seq, frame);
    return;
  }
  receive_from_each_peer(call, OpCode::barrier, seq, [](Frame&, int) {});
  send_to_each_peer(call, OpCode::barrier, seq, [](Frame&, int) {});
}

}  // namespace rankmesh::collectives
