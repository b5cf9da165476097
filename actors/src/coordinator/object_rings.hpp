// ObjectRings: one group's broadcast rings for broadcast_object (collectives/broadcast_object.cpp),
// and the rule that keeps a ring's announcement whichever collective receive meets it.
//
// broadcast_object towards members on the source's node goes through a shared-memory ring that
// the source writes once and every such member reads; members elsewhere get the object over
// their channel. The source makes its ring on its first broadcast and sends its name to each
// same-node member over the channel, in place of that broadcast's object; that object and every
// later one follow through the ring. Where no ring can be made the source logs why and keeps to
// the channels; a member takes whichever arrives.
//
// An announcement is never lost: one that arrives after the member's broadcast timed out is kept
// by whichever collective receive meets it (keep_ring_announcement), and the member's next
// broadcast_object from that source attaches then, skipping the objects it missed. And a source
// that goes away (destroy_model_parallel) first waits, up to the group's timeout, until every
// reader has attached, so that a reader that comes late can still read what was written.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "coordinator/group_state.hpp"
#include "frame.hpp"
#include "rank/broadcast_rings.hpp"

namespace rankmesh {

struct ObjectRings {
  explicit ObjectRings(const GroupState& owner) : group(owner) {}
  ~ObjectRings();
  ObjectRings(const ObjectRings&) = delete;
  ObjectRings& operator=(const ObjectRings&) = delete;

  const GroupState& group;
  // As the source: the ring, its readers by group rank, or why there is none.
  std::unique_ptr<RingWriter> out;
  std::vector<bool> reads_ring;  // by group rank
  bool out_decided = false;
  // As a member: the rings of the sources that announced one, and announcements not yet
  // attached to (name and reader index, encoded), by group rank.
  std::map<int, std::unique_ptr<RingReader>> in;
  std::map<int, std::vector<std::uint8_t>> announced;
  std::vector<std::uint8_t> encoded;  // the source's object, encoded once for every reader
};

// The group's rings, made on first use.
ObjectRings& object_rings(GroupState& group);

// True when `frame` announces group rank `src`'s broadcast ring, which is then kept until the
// next broadcast_object from `src` attaches to it.
bool keep_ring_announcement(GroupState& group, int src, Frame& frame);

}  // namespace rankmesh
