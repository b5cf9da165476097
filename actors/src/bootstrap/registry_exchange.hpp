// The Exchange (exchange.hpp) of a multi-process world, served by rank 0's registry: each round
// is one exchange request (control_messages.hpp), answered once every rank has put in its value.
// Transports use it after the join to publish what depends on the directory (shm segment names).
#pragma once

#include <caf/all.hpp>

#include "exchange.hpp"

namespace rankmesh {

class RegistryExchange final : public Exchange {
public:
  // `registry`: rank 0's registry actor, or in another process the link actor standing in for it.
  RegistryExchange(caf::actor_system& system, caf::actor registry, int rank)
      : system_(system), registry_(std::move(registry)), rank_(rank) {}

  // Throws Error(peer_failed) naming the round and why: the world failed, or no answer came
  // by the deadline.
  std::vector<std::string> all_gather(const std::string& round, const std::string& value,
                                      Deadline deadline) override;

private:
  caf::actor_system& system_;
  caf::actor registry_;
  int rank_;
};

}  // namespace rankmesh
