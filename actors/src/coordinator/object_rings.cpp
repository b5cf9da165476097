#include "coordinator/object_rings.hpp"

#include "coordinator/call.hpp"
#include "op_code.hpp"
#include "rank_context.hpp"

namespace rankmesh {

ObjectRings::~ObjectRings() {
  if (!out || out->wait_attached(deadline_after(group.timeout))) return;
  group.rank_context->log(group.name + " rank " + std::to_string(group.rank_context->rank()) +
                  ": not every reader attached to its broadcast ring within " +
                  milliseconds_text(group.timeout) + "; it goes away without them");
}

ObjectRings& object_rings(GroupState& group) {
  if (!group.object_rings) group.object_rings = std::make_unique<ObjectRings>(group);
  return *group.object_rings;
}

bool keep_ring_announcement(GroupState& group, int src, Frame& frame) {
  if (frame.header.op != static_cast<std::uint32_t>(OpCode::broadcast_ring)) return false;
  ObjectRings& rings = object_rings(group);
  // A source announces its ring once; with its ring attached there is nothing to keep.
  if (rings.in.count(src) == 0) rings.announced[src] = std::move(frame.metadata);
  frame.metadata.clear();
  return true;
}

}  // namespace rankmesh
