#include "bootstrap/bootstrap.hpp"

#include <algorithm>

#include "bootstrap/control_messages.hpp"
#include "bootstrap/rank_actor.hpp"
#include "bootstrap/registry.hpp"
#include "bootstrap/registry_exchange.hpp"
#include "bootstrap/registry_link.hpp"
#include "bootstrap/world_membership.hpp"

namespace rankmesh {

Bootstrap::Bootstrap(caf::actor_system& system, BootstrapOptions options, Deadline deadline)
    : system_(system), options_(std::move(options)) {
  RegistryLinkOptions link;
  link.rank = options_.rank;
  link.world_size = options_.world_size;
  link.secret = options_.secret;
  link.handshake_timeout = options_.failure_timeout;
  link.write_timeout = options_.failure_timeout;
  link.log = options_.log;
  if (options_.rank == 0) {
    registry_ = system.spawn(registry_actor, RegistryConfig{options_.world_size, options_.join_timeout,
                                                            options_.failure_timeout, options_.log});
    try {
      server_ = std::make_unique<RegistryServer>(system, registry_, options_.registry_host,
                                                 options_.registry_port, options_.registry_fd,
                                                 link);
    } catch (...) {
      // No destructor runs for a constructor that throws: stop the registry here, or the
      // runtime's actor system would wait for it until its join timer ends it.
      caf::anon_send_exit(registry_, caf::exit_reason::user_shutdown);
      throw;
    }
  } else {
    client_ = std::make_unique<RegistryClient>(system, options_.registry_host,
                                               options_.registry_port, link, deadline);
    registry_ = client_->registry();
  }
  RankActorConfig config;
  config.rank = options_.rank;
  config.world_size = options_.world_size;
  config.fail_rank = options_.fail_rank;
  config.fail_group = options_.fail_group;
  config.clock_sample = options_.clock_sample;
  config.registry = registry_;
  config.heartbeat = options_.failure_timeout / 4;
  config.failure_timeout = options_.failure_timeout;
  config.leave_timeout = options_.leave_timeout;
  rank_actor_ = system.spawn(rankmesh::rank_actor, std::move(config));
  exchange_ = std::make_unique<RegistryExchange>(system, registry_, options_.rank);
}

Bootstrap::~Bootstrap() {
  caf::anon_send_exit(rank_actor_, caf::exit_reason::user_shutdown);
  if (server_) caf::anon_send_exit(registry_, caf::exit_reason::user_shutdown);
}

std::vector<Member> Bootstrap::join(const std::string& node_id, const std::string& address,
                                    Deadline deadline) {
  Joined joined = join_world(system_, registry_, Member{options_.rank, node_id, address},
                             options_.world_size, rank_actor_, deadline);
  caf::anon_send(rank_actor_, leader_atom::value, joined.leader);
  return std::move(joined.members);
}

void Bootstrap::leave(Deadline deadline) {
  leave_world(system_, rank_actor_, options_.rank, deadline);
  if (client_) {
    // Answered: nothing more goes over the link (the rank actor is quiet now), and rank 0
    // waits for this side to close it before it closes its own.
    client_->hang_up();
    return;
  }
  // A member hangs up as soon as it has its answer; one that does not within the failure
  // timeout is stuck elsewhere, and its link is closed with the others at shutdown.
  const auto start = Clock::now();
  const std::vector<int> stuck =
      server_->wait_for_hang_ups(std::min(deadline, start + options_.failure_timeout));
  if (!stuck.empty() && options_.log) {
    std::string ranks;
    for (int rank : stuck) ranks += (ranks.empty() ? "" : ", ") + std::to_string(rank);
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    options_.log("rankmesh: rank 0: rank(s) " + ranks + " had not hung up " +
                 std::to_string(waited.count()) + " ms after the world left; closing their links");
  }
}

}  // namespace rankmesh
