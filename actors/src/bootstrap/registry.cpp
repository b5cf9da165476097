#include "bootstrap/registry.hpp"

#include <map>
#include <memory>
#include <set>

#include "bootstrap/control_codec.hpp"
#include "bootstrap/control_messages.hpp"
#include "bootstrap/member.hpp"
#include "clock_offset.hpp"
#include "deadline.hpp"

namespace rankmesh {
namespace {

struct Joining {
  Member member;
  caf::actor rank_actor;
  caf::response_promise promise;
};

struct Round {
  std::map<int, std::string> values;
  std::vector<caf::response_promise> promises;
};

struct RegistryState {
  std::map<int, Joining> members;
  bool formed = false;
  std::string failure;  // non-empty once the world failed
  std::map<int, Clock::time_point> last_beat;
  std::map<std::string, Round> rounds;
  Round leaving;
  bool closing = false;  // everyone left: disconnects are expected now
  std::set<std::string> reported;  // ignored messages already logged, by kind and rank
};

}  // namespace

caf::behavior registry_actor(caf::event_based_actor* self, RegistryConfig config) {
  auto state = std::make_shared<RegistryState>();
  auto log = [=](const std::string& line) {
    if (config.log) config.log("rankmesh registry: " + line);
  };
  // A message for a rank that is not a member changes nothing and fails nothing; it is answered,
  // so that nobody waits on it, and reported once per kind and rank, so that a flood costs no
  // more than one line.
  auto stranger = [=](const char* kind, int rank) {
    if (state->members.count(rank)) return false;
    if (state->reported.insert(std::string(kind) + "/" + std::to_string(rank)).second)
      log(std::string("dropped a '") + kind + "' from rank " + std::to_string(rank) +
          ", which is not a member of this world (reported once)");
    return true;
  };
  auto not_member = [](int rank) { return "rank " + std::to_string(rank) + " is not a member of this world"; };
  // Everyone — joined, joining, or waiting in an exchange — learns why the world failed.
  auto fail_world = [=](const std::string& reason) {
    if (!state->failure.empty()) return;
    state->failure = reason;
    if (config.log) config.log("rankmesh registry: " + reason);
    for (auto& [rank, joining] : state->members) {
      if (state->formed) {
        self->send(joining.rank_actor, fail_atom::value, reason);
      } else {
        joining.promise.deliver(reason, std::vector<std::string>{}, caf::actor{});
      }
    }
    for (auto& [name, round] : state->rounds)
      for (auto& promise : round.promises) promise.deliver(reason, std::vector<std::string>{});
    state->rounds.clear();
    for (auto& promise : state->leaving.promises) promise.deliver(reason);
    state->leaving = Round{};
  };

  self->set_down_handler([=](const caf::down_msg& down) {
    if (state->closing) return;
    for (auto& [rank, joining] : state->members)
      if (joining.rank_actor.address() == down.source)
        fail_world("rank " + std::to_string(rank) +
                   " is gone: its process died or lost its connection to rank 0");
  });
  self->delayed_send(self, config.join_timeout, join_timer_atom::value);
  self->delayed_send(self, config.failure_timeout / 4, check_timer_atom::value);

  return {
      [=](join_atom, int rank, int world_size, int version, const std::string& node_id,
          const std::string& address, const caf::actor& rank_actor) {
        auto promise = self->make_response_promise();
        auto refuse = [&](const std::string& why) {
          promise.deliver(why, std::vector<std::string>{}, caf::actor{});
        };
        if (!state->failure.empty()) return refuse(state->failure);
        // Neither a late nor an impossible claim fails a world that stands.
        if (rank < 0 || rank >= config.world_size) {
          log("dropped a join from rank " + std::to_string(rank) + ", outside the world of " +
              std::to_string(config.world_size));
          return refuse("rank " + std::to_string(rank) + " is outside the world of " +
                        std::to_string(config.world_size));
        }
        if (state->formed) {
          log("dropped a join from rank " + std::to_string(rank) + ": the world has already formed");
          return refuse("the world has already formed");
        }
        if (version != kControlProtocolVersion) {
          const std::string why = "rank " + std::to_string(rank) + " speaks control protocol version " +
                                  std::to_string(version) + ", rank 0 speaks version " +
                                  std::to_string(kControlProtocolVersion) +
                                  " (mixed rankmesh builds)";
          refuse(why);
          return fail_world(why);
        }
        if (world_size != config.world_size) {
          refuse("world size mismatch");
          return fail_world("rank " + std::to_string(rank) + " joined with world size " +
                            std::to_string(world_size) + ", but the world has " +
                            std::to_string(config.world_size) + " ranks");
        }
        if (state->members.count(rank)) {
          refuse("duplicate rank");
          return fail_world("rank " + std::to_string(rank) + " joined twice (two processes claim it)");
        }
        self->monitor(rank_actor);
        state->members[rank] = Joining{Member{rank, node_id, address}, rank_actor, promise};
        state->last_beat[rank] = Clock::now();
        if (static_cast<int>(state->members.size()) < config.world_size) return;
        std::vector<std::string> directory;
        for (auto& [r, joining] : state->members) directory.push_back(encode_member(joining.member));
        caf::actor leader = state->members.at(0).rank_actor;
        state->formed = true;
        for (auto& [r, joining] : state->members)
          joining.promise.deliver(std::string(), directory, leader);
      },
      [=](exchange_atom, const std::string& name, int rank, const std::string& value) {
        auto promise = self->make_response_promise();
        if (stranger("exchange", rank)) {
          promise.deliver(not_member(rank), std::vector<std::string>{});
          return;
        }
        if (!state->failure.empty()) {
          promise.deliver(state->failure, std::vector<std::string>{});
          return;
        }
        Round& round = state->rounds[name];
        round.values[rank] = value;
        round.promises.push_back(promise);
        if (static_cast<int>(round.values.size()) < config.world_size) return;
        std::vector<std::string> values;
        for (auto& [r, v] : round.values) values.push_back(v);
        for (auto& p : round.promises) p.deliver(std::string(), values);
        state->rounds.erase(name);
      },
      [=](leave_atom, int rank) {
        auto promise = self->make_response_promise();
        if (stranger("leave", rank)) {
          promise.deliver(not_member(rank));
          return;
        }
        if (!state->failure.empty()) {
          promise.deliver(state->failure);
          return;
        }
        state->leaving.values[rank] = "";
        state->leaving.promises.push_back(promise);
        if (static_cast<int>(state->leaving.values.size()) < config.world_size) return;
        state->closing = true;
        for (auto& p : state->leaving.promises) p.deliver(std::string());
      },
      [=](group_fail_atom, int rank, std::uint32_t group, const std::vector<int>& members,
          const std::string& reason) {
        if (stranger("group_fail", rank)) return;
        // Before the world formed there are no groups; a failed world has failed every group.
        if (!state->formed || !state->failure.empty() || state->closing) return;
        // Members listed twice are told once: the list's length is bounded by the link's frame
        // limits, what is relayed by the world.
        std::string wrong;
        for (int member : members)
          if (wrong.empty() && (member < 0 || member >= config.world_size))
            wrong = "member rank " + std::to_string(member) + " is outside the world of " +
                    std::to_string(config.world_size);
        if (wrong.empty() && reason.size() > kMaxGroupFailureReason)
          wrong = "a reason of " + std::to_string(reason.size()) + " bytes (at most " +
                  std::to_string(kMaxGroupFailureReason) + ")";
        if (!wrong.empty()) {
          // Refused, and reported once per rank: a flood costs one line.
          if (state->reported.insert("group_fail/" + std::to_string(rank)).second)
            log("refused a group failure notice from rank " + std::to_string(rank) + " for group " +
                std::to_string(group) + ": " + wrong + " (later refusals from it are not reported)");
          return;
        }
        std::set<int> told;
        std::string listed;
        for (int member : members) {
          if (member == rank || !told.insert(member).second) continue;
          self->send(state->members.at(member).rank_actor, group_failed_atom::value, group, reason);
          listed += (listed.empty() ? "" : ", ") + std::to_string(member);
        }
        log("rank " + std::to_string(rank) + " failed group " + std::to_string(group) +
            (listed.empty() ? std::string(", nobody else to tell") : "; told rank(s) " + listed) +
            ": " + reason);
      },
      [=](beat_atom, int rank) {
        // A rank actor starts beating before its join arrives: not news until the world formed.
        const bool may_still_join = !state->formed && rank >= 0 && rank < config.world_size;
        if (state->members.count(rank)) {
          state->last_beat[rank] = Clock::now();
        } else if (!may_still_join) {
          stranger("beat", rank);
        }
        // Rank 0's clock (its process's CLOCK_MONOTONIC): ranks on other hosts estimate their
        // offset from it for their trace files (rank/clock_offset.hpp).
        return ClockOffset::now_ns();
      },
      [=](join_timer_atom) {
        if (state->formed || !state->failure.empty()) return;
        std::string missing;
        for (int r = 0; r < config.world_size; ++r)
          if (!state->members.count(r)) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        fail_world("rank(s) " + missing + " did not join within " +
                   std::to_string(config.join_timeout.count()) + " ms");
      },
      [=](check_timer_atom) {
        if (!state->failure.empty() || state->closing) return;
        if (state->formed) {
          const auto now = Clock::now();
          for (auto& [rank, seen] : state->last_beat) {
            if (rank == 0 || now - seen <= config.failure_timeout) continue;
            fail_world("rank " + std::to_string(rank) + " stopped responding: no heartbeat for " +
                       std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - seen).count()) +
                       " ms (frozen or overloaded)");
            return;
          }
        }
        self->delayed_send(self, config.failure_timeout / 4, check_timer_atom::value);
      },
  };
}

}  // namespace rankmesh
