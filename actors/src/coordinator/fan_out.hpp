// Fan-out: one message to every other member of the group, or one from each, in ascending
// group-rank order — the step every collective here is built from.
#pragma once

#include <cstdint>

#include "coordinator/matcher.hpp"
#include "coordinator/payloads.hpp"

namespace rankmesh {

// Calls `each(peer)` for every other member, in group-rank order.
template <class Each>
void for_each_peer(const Call& call, Each&& each) {
  for (int peer = 0; peer < call.size(); ++peer)
    if (peer != call.rank_in_group()) each(peer);
}

// Sends message `seq` of `op` to every other member, its frame filled by `fill(frame, peer)`.
template <class Fill>
void send_to_each_peer(const Call& call, OpCode op, std::uint64_t seq, Fill&& fill) {
  Frame& frame = call.frame();
  for_each_peer(call, [&](int peer) {
    frame.metadata.clear();
    frame.clear_payloads();
    fill(frame, peer);
    send_numbered(call, peer, op, seq, frame);
  });
}

// Sends message `seq` of `op` to every other member, carrying the one tensor `tensor_for(peer)`.
template <class TensorFor>
void send_tensor_to_each_peer(const Call& call, OpCode op, std::uint64_t seq, TensorFor&& tensor_for) {
  send_to_each_peer(call, op, seq,
                    [&](Frame& frame, int peer) { frame.tensors.push_back(tensor_for(peer)); });
}

// Receives message `seq` of `op` from every other member, handing it to `take(frame, peer)`.
template <class Take>
void receive_from_each_peer(const Call& call, OpCode op, std::uint64_t seq, Take&& take) {
  Frame& frame = call.frame();
  for_each_peer(call, [&](int peer) {
    receive_collective(call, peer, op, seq, frame);
    take(frame, peer);
  });
}

// Receives message `seq` of `op` from every other member, handing its one tensor, made ready,
// to `take(tensor, peer)`.
template <class Take>
void receive_tensor_from_each_peer(const Call& call, OpCode op, std::uint64_t seq, Take&& take) {
  receive_from_each_peer(call, op, seq, [&](Frame& frame, int peer) {
    take(take_only_tensor(call, peer, frame), peer);
  });
}

}  // namespace rankmesh
