// The operation each frame belongs to. Point-to-point and collective messages of one group are
// matched separately: p2p FIFO per peer, collectives by the group's collective sequence number.
#pragma once

#include <cstdint>

namespace rankmesh {

enum class OpCode : std::uint32_t {
  // point-to-point
  object = 1,
  tensor_dict = 2,
  // collective (>= kFirstCollective)
  broadcast_object = 16,
  broadcast_tensor_dict,
  all_reduce,
  all_gather,
  all_gatherv,
  reduce_scatter,
  reduce_scatterv,
  gather,
  broadcast,
  barrier,
  all_to_all,
  // broadcast_object's first message to a same-node member: the shared-memory ring that this
  // and later objects from the same source travel through.
  broadcast_ring,
};
inline constexpr std::uint32_t kFirstCollective = 16;

inline bool is_collective_op(std::uint32_t op) noexcept { return op >= kFirstCollective; }

inline const char* op_name(std::uint32_t op) noexcept {
  switch (static_cast<OpCode>(op)) {
    case OpCode::object: return "send_object";
    case OpCode::tensor_dict: return "send_tensor_dict";
    case OpCode::broadcast_object: return "broadcast_object";
    case OpCode::broadcast_tensor_dict: return "broadcast_tensor_dict";
    case OpCode::all_reduce: return "all_reduce";
    case OpCode::all_gather: return "all_gather";
    case OpCode::all_gatherv: return "all_gatherv";
    case OpCode::reduce_scatter: return "reduce_scatter";
    case OpCode::reduce_scatterv: return "reduce_scatterv";
    case OpCode::gather: return "gather";
    case OpCode::broadcast: return "broadcast";
    case OpCode::barrier: return "barrier";
    case OpCode::all_to_all: return "all_to_all";
    case OpCode::broadcast_ring: return "broadcast_object (ring set-up)";
  }
  return "unknown operation";
}

}  // namespace rankmesh
