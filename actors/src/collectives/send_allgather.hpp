// send-allgather: a tensor dict sent to a peer group travels as slices — 1/n of each tensor from
// each of the n members of an all-gather group — and the receivers all-gather the slices back
// together. These are the rules of which tensors travel sliced.
//
// The per-key map decides where slicing is allowed (true: always sliced, false: never); a key it
// does not list may travel as a slice when its element count divides by the all-gather group's
// size, and the senders choose (slice_pays()). The receiver follows what the metadata says,
// after checking that its own settings allow it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/call.hpp"
#include "rankmesh/group_coordinator.hpp"

namespace rankmesh {

// A key path as AllGatherTensors and RecvInto spell it: "outer.inner".
std::string dotted_key(const std::vector<std::string>& path);

// What the map says about `key`: forced sliced (true), forced whole (false), or nothing.
std::optional<bool> forced_slicing(const AllGatherTensors& overrides, const std::string& key);
// Whether `key` (of `numel` elements) may travel as a slice of `all_gather_group`.
bool may_slice(const GroupState* all_gather_group, const AllGatherTensors& overrides,
               const std::string& key, std::int64_t numel);

// Slicing sends 1/n of the bytes to the peer and then all-gathers them among the receivers: it
// pays where the link to the peer is the slow one — the peer on another node while the
// all-gather group shares this rank's node — and for payloads large enough that the extra
// collective's latency does not dominate. On one node every link is as fast as the others and
// sending whole moves no more bytes with one step less (measured: scripts/bench.sh, (c)).
// The receivers all-gather together, so every sender of the group must choose alike; but on
// mixed topologies one member's peer shares its node while another's does not. So the choice
// rests only on what the members share: the tensor's size, whether the all-gather group lies
// on one node, and whether any member's link leaves it (links_leave_node).
inline constexpr std::size_t kMinSlicedBytes = std::size_t{1} << 20;
inline bool slice_pays(bool links_leave_node, std::size_t nbytes) {
  return links_leave_node && nbytes >= kMinSlicedBytes;
}

// Whether, for the members of `all_gather_group` sending to group rank `to` of their p2p groups
// (`call`'s group), any link leaves the node: asked once per (all-gather group, destination)
// with a one-element all_reduce on the all-gather group — every member sends at the same step,
// so all of them ask together — and remembered. False without asking where the all-gather group
// does not lie on one node (slicing never pays there), which every member sees alike.
bool links_leave_node(const Call& call, GroupState* all_gather_group, int to);

}  // namespace rankmesh
