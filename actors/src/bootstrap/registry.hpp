// The rendezvous registry (CAF), hosted by rank 0's process: every rank joins with its rank,
// node identity and data-plane address; once all have joined, every rank learns the directory.
// Afterwards the registry watches the world through CAF monitors and heartbeats and tells every
// rank when one is lost, and relays a member's group failure notice to the group's other members.
// Other processes reach it only through authenticated links
// (registry_link.hpp), which name the rank of every message they pass on; the registry itself
// trusts the rank it is told and ignores messages from ranks that are not members. Its messages
// are in control_messages.hpp; a rank's blocking requests to it in world_membership.hpp and
// registry_exchange.hpp.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <caf/all.hpp>

namespace rankmesh {

struct RegistryConfig {
  int world_size = 1;
  std::chrono::milliseconds join_timeout{30000};
  std::chrono::milliseconds failure_timeout{2000};
  std::function<void(const std::string&)> log;
};

caf::behavior registry_actor(caf::event_based_actor* self, RegistryConfig config);

}  // namespace rankmesh
