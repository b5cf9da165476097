// The rendezvous registry (CAF), hosted by rank 0's process: every rank joins with its rank,
// node identity and data-plane address; once all have joined, every rank learns the directory.
// Afterwards the registry watches the world through CAF monitors and heartbeats and tells every
// rank when one is lost. Other processes reach it only through authenticated links
// (registry_link.hpp), which name the rank of every message they pass on; the registry itself
// trusts the rank it is told and ignores messages from ranks that are not members.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "deadline.hpp"

namespace rankmesh {

using join_atom = caf::atom_constant<caf::atom("join")>;
using exchange_atom = caf::atom_constant<caf::atom("exchange")>;
using leave_atom = caf::atom_constant<caf::atom("leave")>;

struct RegistryConfig {
  int world_size = 1;
  std::chrono::milliseconds join_timeout{30000};
  std::chrono::milliseconds failure_timeout{2000};
  std::function<void(const std::string&)> log;
};

caf::behavior registry_actor(caf::event_based_actor* self, RegistryConfig config);

// One rank's entry in the directory.
struct Member {
  int rank = 0;
  std::string node_id;
  std::string address;  // "host:port" of its data-plane listener
};

struct Joined {
  std::vector<Member> members;  // by rank
  caf::actor leader;            // rank 0's rank actor
};

// Joins the world through `registry` (blocking, bounded by `deadline`). Throws Error naming why
// the world could not form (duplicate rank, world size or protocol version mismatch, missing
// ranks).
Joined join_world(caf::actor_system& system, const caf::actor& registry, const Member& me,
                  int world_size, const caf::actor& rank_actor, Deadline deadline);

// Every rank contributes `value` to round `round`; returns all values in rank order (blocking,
// bounded). Used after the join to publish what depends on the directory (shm segment names).
std::vector<std::string> exchange(caf::actor_system& system, const caf::actor& registry,
                                  const std::string& round, int rank, const std::string& value,
                                  Deadline deadline);

// Leaves the world together with every other rank (blocking, bounded), through this rank's
// actor: once all have left, the registry and the rank actors stop watching, so processes
// exiting one after the other fail nobody.
void leave_world(caf::actor_system& system, const caf::actor& rank_actor, int rank,
                 Deadline deadline);

}  // namespace rankmesh
