// A rank's blocking requests to the registry (registry.hpp) that begin and end its membership:
// joining the world, and leaving it together with every other rank.
#pragma once

#include <vector>

#include <caf/all.hpp>

#include "bootstrap/member.hpp"
#include "deadline.hpp"

namespace rankmesh {

struct Joined {
  std::vector<Member> members;  // by rank
  caf::actor leader;            // rank 0's rank actor
};

// Joins the world through `registry` (blocking, bounded by `deadline`). Throws Error naming why
// the world could not form (duplicate rank, world size or protocol version mismatch, missing
// ranks).
Joined join_world(caf::actor_system& system, const caf::actor& registry, const Member& self,
                  int world_size, const caf::actor& rank_actor, Deadline deadline);

// Leaves the world together with every other rank (blocking, bounded), through this rank's
// actor: once all have left, the registry and the rank actors stop watching, so processes
// exiting one after the other fail nobody.
void leave_world(caf::actor_system& system, const caf::actor& rank_actor, int rank,
                 Deadline deadline);

}  // namespace rankmesh
