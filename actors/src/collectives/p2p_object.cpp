// send_object / recv_object: one codec value to one peer, FIFO per (group, src, dst).
#include "codec.hpp"
#include "collectives/collectives.hpp"
#include "coordinator/matcher.hpp"

namespace rankmesh::collectives {

void send_object(GroupState& group, const Value& object, int dst) {
  Call call(group, "send_object");
  call.check_other_peer(dst, "dst");
  send_point_to_point(call, dst, [&](std::uint64_t seq) {
    Frame& frame = call.frame();
    encode(object, frame.metadata);
    frame.tensors.clear();
    send_numbered(call, dst, OpCode::object, seq, frame);
  });
}

Value recv_object(GroupState& group, int src) {
  Call call(group, "recv_object");
  call.check_other_peer(src, "src");
  Frame& frame = call.frame();
  receive_point_to_point(call, src, OpCode::object, frame);
  Result<Value> object = decode_object(frame.metadata);
  if (!object)
    throw Error(Errc::malformed, call.where() + ": object from " + call.who(src) +
                                     " does not decode: " + object.error().what());
  return std::move(object).value();
}

}  // namespace rankmesh::collectives
