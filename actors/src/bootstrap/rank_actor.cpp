#include "bootstrap/rank_actor.hpp"

#include <cstdint>
#include <map>
#include <vector>
#include <optional>

#include "bootstrap/control_codec.hpp"
#include "bootstrap/control_messages.hpp"
#include "clock_offset.hpp"

namespace rankmesh {
namespace {

struct Pending {
  std::string proposal;
  caf::response_promise promise;
};

std::string verdict(const std::map<int, Pending>& proposals) {
  const std::string& reference = proposals.begin()->second.proposal;
  for (const auto& [rank, pending] : proposals)
    if (pending.proposal != reference)
      return "initialize_model_parallel: rank " + std::to_string(rank) + " passed " +
             pending.proposal + ", but rank " + std::to_string(proposals.begin()->first) +
             " passed " + reference;
  return "";
}

struct State {
  caf::actor leader;                 // rank 0's actor; null until known
  std::map<int, Pending> proposals;  // the leader's collection
  std::string failure;  // why this rank's world failed; empty while it stands
  bool quiet = false;  // the world has left together: disconnects are expected
  // This rank's request to leave, while the registry has not answered it.
  std::optional<caf::response_promise> leaving;
  // One process: every rank's actor by rank (weak: the actors do not keep each other alive).
  std::vector<caf::actor_addr> peers;
};

}  // namespace

caf::behavior rank_actor(caf::event_based_actor* self, RankActorConfig config) {
  auto state = std::make_shared<State>();
  state->leader = config.rank == 0 ? caf::actor_cast<caf::actor>(self) : config.leader;
  auto fail = [=](const std::string& reason) {
    if (!state->failure.empty() || state->quiet) return;
    state->failure = reason;
    config.fail_rank(reason);
    // A frozen registry never answers a leave: the failure does.
    if (state->leaving) {
      state->leaving->deliver(reason);
      state->leaving.reset();
    }
  };
  if (config.registry) {
    // Losing the registry's process (rank 0) is losing the world.
    self->monitor(config.registry);
    self->set_down_handler([=](const caf::down_msg&) {
      fail("rank 0 (the registry) is gone: its process died or closed the connection");
    });
    self->send(self, beat_atom::value);
  }
  return {
      [=](leader_atom, const caf::actor& leader) { state->leader = leader; },
      [=](propose_atom, const std::string& proposal) {
        return self->delegate(state->leader, check_atom::value, config.rank, proposal);
      },
      [=](check_atom, int from, const std::string& proposal) {
        // Answered later, once every rank has proposed: the promise takes over the request.
        state->proposals[from] = Pending{proposal, self->make_response_promise()};
        if (static_cast<int>(state->proposals.size()) == config.world_size) {
          std::string outcome = verdict(state->proposals);
          for (auto& entry : state->proposals) entry.second.promise.deliver(outcome);
          state->proposals.clear();
        }
      },
      [=](fail_atom, const std::string& reason) { fail(reason); },
      [=](peers_atom, const std::vector<caf::actor>& peers) {
        state->peers.clear();
        for (const caf::actor& peer : peers) state->peers.push_back(caf::actor_cast<caf::actor_addr>(peer));
      },
      [=](group_fail_atom, std::uint32_t group, std::vector<int> members, std::string reason) {
        reason = bounded_reason(std::move(reason));
        if (config.registry) {  // across processes: the registry relays it to the members
          self->send(config.registry, group_fail_atom::value, config.rank, group, std::move(members),
                     std::move(reason));
          return;
        }
        for (int member : members) {
          if (member == config.rank || member < 0 || member >= static_cast<int>(state->peers.size()))
            continue;
          if (auto peer = caf::actor_cast<caf::actor>(state->peers[static_cast<std::size_t>(member)]))
            self->send(peer, group_failed_atom::value, group, reason);
        }
      },
      [=](group_failed_atom, std::uint32_t group, const std::string& reason) {
        if (config.fail_group) config.fail_group(group, reason);
      },
      [=](leave_atom) {
        // The registry's answer reaches this actor before any disconnect that follows it.
        auto promise = self->make_response_promise();
        if (!state->failure.empty()) {  // a failed world has nobody left to wait for
          promise.deliver(state->failure);
          return;
        }
        state->leaving = promise;
        auto answer = [=](const std::string& outcome) {
          if (!state->leaving) return;  // a failure answered first
          state->leaving->deliver(outcome);
          state->leaving.reset();
        };
        self->request(config.registry, config.leave_timeout, leave_atom::value, config.rank)
            .then([=](const std::string& failure) {
                    state->quiet = true;
                    answer(failure);
                  },
                  [=](const caf::error& error) {
                    answer("rank 0 did not answer: " + self->system().render(error));
                  });
      },
      [=](beat_atom) {
        if (!state->failure.empty() || state->quiet) return;
        // A frozen registry (SIGSTOP) keeps its sockets open: only a missing answer shows it.
        // The answer carries rank 0's clock: each heartbeat is a clock sample too.
        const std::int64_t sent_ns = ClockOffset::now_ns();
        self->request(config.registry, config.failure_timeout, beat_atom::value, config.rank)
            .then([=](std::int64_t rank0_ns) {
                    if (config.clock_sample) config.clock_sample(sent_ns, rank0_ns, ClockOffset::now_ns());
                    if (!state->quiet) self->delayed_send(self, config.heartbeat, beat_atom::value);
                  },
                  [=](const caf::error&) {
                    fail("rank 0 (the registry) did not answer a heartbeat within " +
                         std::to_string(config.failure_timeout.count()) + " ms");
                  });
      },
  };
}

}  // namespace rankmesh
