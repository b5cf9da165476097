// DeviceIpc: device tensors between processes of one node without staging through host memory
// (CUDA IPC). Where the rank has it on (RankContext::device_ipc) and the peer shares this node,
// the sender copies a device tensor once on its device, exports that copy
// (DeviceBackend::export_to_peer) and sends the export's descriptor instead of the bytes; the
// receiver imports it and copies device-to-device on its current stream. The sender's backend
// holds its copy until the receiver's copy has completed, or for the group's timeout at most (a
// receiver that died or never receives does not keep it for ever).
//
// On the wire (tensor dicts: send_tensor_dict, broadcast_tensor_dict): a frame whose payloads
// hold descriptors carries one more payload than its metadata lists, the last: a u8 table
// naming which payloads are descriptors (magic "RMDX", a count, ascending u32 payload indices).
// The count of payloads the metadata lists is exact, so a frame says by its structure whether
// it has a table, and the table says which payloads are descriptors; a frame without one holds
// staged bytes only, as before. Nothing is ever guessed from a payload's size.
//
// A device whose backend cannot export (or an export that fails) falls back to staging for that
// tensor, and the rank's log says so once per process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "coordinator/call.hpp"

namespace rankmesh {

struct TensorMeta;

// The sending side of one frame.
class DeviceExports {
public:
  // The descriptor payload (a host u8 tensor) for device tensor `t` to group rank `dst`, to be
  // payload `index` of the frame; undefined where this path does not apply or the export
  // failed (the caller stages instead). `donated`: `t` is the sender's to give away (exported
  // as it is, no copy).
  Tensor try_export(const Call& call, const Tensor& t, int dst, bool donated, std::size_t index);
  // Appends the table, where any payload is a descriptor. Clears this for the next frame.
  void finish(Frame& frame);

private:
  std::vector<std::uint32_t> indices_;
};

// The receiving side of one frame.
class DeviceImports {
public:
  // Takes the table off `payloads` when there is one more than `expected` (the payloads the
  // metadata lists). Error(malformed) for a table that does not read or names a payload that
  // does not exist.
  DeviceImports(const Call& call, int src, std::vector<Tensor>& payloads, std::size_t expected);

  bool is_descriptor(std::size_t index) const noexcept;
  // The tensor that descriptor payload `descriptor` names, copied onto this rank's device for
  // `meta` on the caller's current stream of that device (ready once the copy has run).
  Tensor import(const Call& call, int src, const Tensor& descriptor, const TensorMeta& meta) const;

private:
  std::vector<std::uint32_t> indices_;  // ascending
};

}  // namespace rankmesh
