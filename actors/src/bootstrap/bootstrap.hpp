// Bootstrap: how one rank of a multi-process world finds the others, agrees with them and
// learns when one is lost. Rank 0 hosts the registry (registry.hpp) and accepts every other
// rank's authenticated link to it (registry_link.hpp); every rank runs its rank actor
// (rank_actor.hpp), which beats to the registry and fails the rank when the world loses
// someone. The runtime joins, hands the transports the exchange, and leaves at the end; the
// rest of this folder is seen by nobody else.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "bootstrap/member.hpp"
#include "deadline.hpp"
#include "exchange.hpp"

namespace rankmesh {

class RegistryServer;
class RegistryClient;

struct BootstrapOptions {
  int rank = 0;
  int world_size = 1;
  std::string secret;  // proves every link (auth.hpp)
  std::string registry_host;  // where rank 0 listens: MASTER_ADDR, MASTER_PORT
  std::uint16_t registry_port = 0;
  // Rank 0: the registry's socket, already bound to that port and listening (from rankmesh
  // launch), or -1 to bind it here.
  int registry_fd = -1;
  // How long the registry waits for every rank to join.
  std::chrono::milliseconds join_timeout{30000};
  // A rank (or the registry) silent this long is lost; also bounds a link's handshake and writes.
  std::chrono::milliseconds failure_timeout{2000};
  // How long leaving may wait for slower ranks.
  std::chrono::milliseconds leave_timeout{30000};
  std::function<void(const std::string&)> log;
  // Called once, with why, when the world fails: fails the rank's channels and wakes its waiters.
  std::function<void(const std::string& reason)> fail_rank;
  // Called for every notice that another member failed one of the rank's groups
  // (RankActorConfig::fail_group).
  std::function<void(std::uint32_t group, const std::string& reason)> fail_group;
  // Heartbeats as clock samples (RankActorConfig::clock_sample).
  std::function<void(std::int64_t sent_ns, std::int64_t rank0_ns, std::int64_t received_ns)> clock_sample;
};

class Bootstrap {
public:
  // Rank 0 starts the registry and listens for the others; every other rank connects to it,
  // retrying until `deadline` while rank 0 is not up yet. Throws Error naming why it could not.
  Bootstrap(caf::actor_system& system, BootstrapOptions options, Deadline deadline);
  // Stops this rank's actors and closes its links.
  ~Bootstrap();
  Bootstrap(const Bootstrap&) = delete;
  Bootstrap& operator=(const Bootstrap&) = delete;

  // This rank's actor, through which initialize_model_parallel's agreement goes.
  const caf::actor& rank_actor() const noexcept { return rank_actor_; }

  // Joins the world with this rank's node identity and data-plane address; returns every
  // rank's entry, by rank, once all have joined. Throws Error(peer_failed) naming why the world
  // did not form.
  std::vector<Member> join(const std::string& node_id, const std::string& address,
                           Deadline deadline);

  // What the transports connect through once joined: the registry's exchange rounds.
  Exchange& exchange() noexcept { return *exchange_; }

  // Leaves together with every other rank, so that processes exiting one after the other fail
  // nobody. Throws Error(peer_failed) when the world failed first or rank 0 did not answer.
  void leave(Deadline deadline);

private:
  caf::actor_system& system_;
  const BootstrapOptions options_;
  // Rank 0's registry actor, or elsewhere the link actor standing in for it — CAF's middleman
  // is never loaded, since its protocol lets any connected peer message or kill any actor
  // before it could be checked.
  caf::actor registry_;
  std::unique_ptr<RegistryServer> server_;  // rank 0
  std::unique_ptr<RegistryClient> client_;  // every other rank
  caf::actor rank_actor_;
  std::unique_ptr<Exchange> exchange_;  // the registry's (registry_exchange.hpp)
};

}  // namespace rankmesh
