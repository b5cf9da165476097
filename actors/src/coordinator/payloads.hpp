// Payloads: how a call's tensors become messages and messages become tensors — when a tensor
// must be copied before it travels, when a received one is ready to use, and the checks that a
// peer's tensor fits this rank's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "coordinator/call.hpp"
#include "rankmesh/event.hpp"

namespace rankmesh {

inline const std::byte* bytes_of(const Tensor& t) { return static_cast<const std::byte*>(t.data()); }
inline std::byte* bytes_of(Tensor& t) { return static_cast<std::byte*>(t.data()); }

// A copy for a peer, which may then keep it. Host bytes that are ready are copied at once;
// otherwise the copy runs on this rank's stream once the tensor's ready event completes (send
// never blocks on it), and the caller's current stream waits for that copy before later work
// may overwrite the tensor.
Tensor copy_for_peer(const Call& call, const Tensor& t);

// Whether `t` is a ready host tensor that a channel of `traits` would still read after send()
// returns, so that its peer needs a copy (unless donated) — or, where the channel copies while
// it sends, the tensor marked borrowed. Inline: append_payloads asks it per tensor.
inline bool copied_for_peer(const ChannelTraits& traits, const Tensor& t) {
  return host_bytes_ready(t) && traits.reads_after_send(t.nbytes());
}

// A ready host tensor that the channel to group rank `dst` copies before send() returns needs
// no copy to keep the caller's tensor safe from the transfer (small payloads over shm).
bool copied_on_send(const Call& call, const Tensor& t, int dst);

// Appends to frame.tensors what travels to group rank `dst` for the caller's `t`: the tensor
// itself where the caller donated it or the channel copies it on send anyway, a device
// tensor's bytes staged to host where the channel carries host memory only (shm, tcp: the
// receiver puts them back on its device), the caller's ready host tensor marked borrowed
// (frame.borrowed) for a channel that copies while it sends (shm, tcp), else a copy for the peer
// (made straight from `t`: no hold is taken on the caller's tensor). With `exports` (the
// frame's), a device tensor to another process of this node may travel as exported device
// memory instead (device_ipc.hpp). A device tensor staged for a channel that writes payloads
// progressively (tcp), of more than kStagingChunkBytes, is staged in chunks, not waited for:
// recorded in frame.chunked, and the channel sends each chunk once it is in host memory.
class DeviceExports;
void append_payload(const Call& call, const Tensor& t, int dst, bool donated, Frame& frame,
                    DeviceExports* exports = nullptr);

// Appends to frame.tensors the payloads for `tensors` (the caller's, in metadata order; those
// without elements never travel and are skipped) as append_payload() does, except that the
// small host tensors it would copy one by one are copied into parts of one pooled block
// (payload_block.hpp): one allocation and one release per message, not per tensor.
void append_payloads(const Call& call, std::span<const Tensor* const> tensors, int dst,
                     bool donated, Frame& frame, DeviceExports* exports);

// Collectives compute on the host: their inputs must be host tensors whose bytes are ready.
void require_host_ready(const Call& call, const Tensor& t);

// A received tensor made usable: host bytes are ready before the call returns (the engine may
// read them at once); a device tensor's event is handed to the caller's current stream instead.
// Inline for the common case, a payload that came ready (no event): called per tensor.
void wait_for_ready_event(const Call& call, const Tensor& t);
inline void make_received_ready(const Call& call, const Tensor& t) {
  if (t.ready_event()) wait_for_ready_event(call, t);
}

// Copies a received tensor into the caller's buffer, through the buffer's device.
void copy_into(const Call& call, const Tensor& received, const Tensor& dest);

// A fresh 1-D tensor of `count` elements of `t` starting at element `start`.
Tensor flat_slice(const Call& call, const Tensor& t, std::int64_t start, std::int64_t count);

// The one tensor a collective's message from `src` carries, taken out of `frame`, made ready.
Tensor take_only_tensor(const Call& call, int src, Frame& frame);

// A tensor from `src` must match this rank's `mine` in dtype and shape — along `dim` too
// unless `any_rows` (the sizes along dim may differ: all_gatherv, all_to_all).
void check_matches(const Call& call, int src, const Tensor& got, const Tensor& mine, int dim,
                   bool any_rows);

}  // namespace rankmesh
