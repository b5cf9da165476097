// The operations of a group, one file each; GroupCoordinator forwards every call here. Each
// starts a Call on the group's state (coordinator/call.hpp) and talks through the matcher and
// the fan-out helpers (coordinator/).
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "coordinator/group_state.hpp"
#include "rankmesh/group_coordinator.hpp"

namespace rankmesh::collectives {

// p2p_object.cpp
void send_object(GroupState& group, const Value& object, int dst);
Value recv_object(GroupState& group, int src);
// broadcast_object.cpp
Value broadcast_object(GroupState& group, const Value& object, int src);
// p2p_tensor_dict.cpp. `donate`: the caller gave up the dict's tensors (the receiver may share
// them); `all_gather_group`: send-allgather (send_allgather.hpp).
void send_tensor_dict(GroupState& group, const TensorDict& dict, bool donate,
                      std::optional<int> dst, GroupState* all_gather_group,
                      const AllGatherTensors& all_gather_tensors);
TensorDict recv_tensor_dict(GroupState& group, std::optional<int> src, GroupState* all_gather_group,
                            const AllGatherTensors& all_gather_tensors, const RecvInto& into);
// broadcast_tensor_dict.cpp
TensorDict broadcast_tensor_dict(GroupState& group, const TensorDict& dict, int src);
// all_reduce.cpp
Tensor all_reduce(GroupState& group, const Tensor& input, ReduceOp op);
// all_gather.cpp
Tensor all_gather(GroupState& group, const Tensor& input, int dim);
Tensor all_gatherv(GroupState& group, const Tensor& input, int dim);
// reduce_scatter.cpp
Tensor reduce_scatter(GroupState& group, const Tensor& input, int dim, ReduceOp op);
Tensor reduce_scatterv(GroupState& group, const Tensor& input, std::span<const std::int64_t> sizes,
                       int dim, ReduceOp op);
// gather.cpp
Tensor gather(GroupState& group, const Tensor& input, int dst, int dim);
// broadcast.cpp
Tensor broadcast(GroupState& group, Tensor& tensor, int src);
// barrier.cpp
void barrier(GroupState& group);
// all_to_all.cpp
Tensor all_to_all(GroupState& group, const Tensor& input, std::span<const std::int64_t> send_counts);

}  // namespace rankmesh::collectives
