// broadcast_tensor_dict: group rank `src`'s tensor dict on every member, each receiver with
// its own copy of the tensors.
#include <vector>

#include "codec.hpp"
#include "collectives/collectives.hpp"
#include "collectives/tensor_dict_rebuild.hpp"
#include "coordinator/device_ipc.hpp"
#include "coordinator/fan_out.hpp"
#include "dict_metadata.hpp"

namespace rankmesh::collectives {

TensorDict broadcast_tensor_dict(GroupState& group, const TensorDict& dict, int src) {
  Call call(group, "broadcast_tensor_dict");
  call.check_peer(src, "src");
  if (call.size() == 1) return dict;
  call.ask(CollectiveRequest(OpCode::broadcast_tensor_dict).root(src));
  const std::uint64_t seq = begin_collective(call);
  if (call.rank_in_group() == src) {
    SplitDict parts = split(dict);
    std::vector<std::uint8_t> encoded;
    encode(parts.metadata, encoded);
    send_to_each_peer(call, OpCode::broadcast_tensor_dict, seq, [&](Frame& frame, int peer) {
      frame.metadata.assign(encoded.begin(), encoded.end());
      DeviceExports exports;
      for (const Tensor& t : parts.tensors)
        if (t.numel() != 0) append_payload(call, t, peer, false, frame, &exports);
      exports.finish(frame);
    });
    return dict;
  }
  Frame& frame = call.frame();
  receive_collective(call, src, OpCode::broadcast_tensor_dict, seq, frame);
  return rebuild_tensor_dict(call, src, frame, nullptr, {}, {});
}

}  // namespace rankmesh::collectives
