// The dict rebuild: a received tensor dict frame back into a TensorDict.
#pragma once

#include "coordinator/call.hpp"
#include "rankmesh/group_coordinator.hpp"

namespace rankmesh {

// Rebuilds the dict that group rank `src` sent in `frame`: checks each payload against the
// metadata, undoes send-allgather slicing (on `all_gather_group`, after checking that this
// receiver's settings allow what came), and lands tensors in the caller's buffers (`into`)
// where given.
TensorDict rebuild_tensor_dict(const Call& call, int src, Frame& frame, GroupState* all_gather_group,
                               const AllGatherTensors& overrides, const RecvInto& into);

}  // namespace rankmesh
