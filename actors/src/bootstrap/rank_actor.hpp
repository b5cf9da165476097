// The rank actor (CAF): the control plane of its rank. It does what is rare — checking that
// every rank initializes the same way and, across processes, watching the world: heartbeats to
// the registry, failure notices from it — and fails its rank's channels when a peer is lost. It
// also carries group failure notices (issue 13): its engine fails a group as a whole, and the
// notice goes to the group's other members' rank actors (through the registry across processes,
// directly in one process), which fail that group on their ranks.
// Per-message traffic never passes through it. Its messages are in control_messages.hpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include <caf/all.hpp>

namespace rankmesh {

struct RankActorConfig {
  int rank = 0;
  int world_size = 1;
  // Fails the rank's channels and wakes its waiting operations; called once, with why the
  // world failed.
  std::function<void(const std::string& reason)> fail_rank;
  // Fails one group of the rank (RankContext::group_failed), called for every notice that
  // another member failed group `group` (its id) with `reason`. Unset: notices are dropped.
  std::function<void(std::uint32_t group, const std::string& reason)> fail_group;
  // Across processes, each answered heartbeat: sent and answered at these times (this clock),
  // carrying rank 0's (-1 when the answer's did not parse). Feeds ClockOffset; may be empty.
  std::function<void(std::int64_t sent_ns, std::int64_t rank0_ns, std::int64_t received_ns)> clock_sample;
  caf::actor leader;  // rank 0's actor when known at spawn (one process); else by leader_atom
  // Across processes: the registry to send heartbeats to (null in one process), how often, and
  // how long an unanswered heartbeat may take before the rank declares the registry lost.
  caf::actor registry;
  std::chrono::milliseconds heartbeat{0};
  std::chrono::milliseconds failure_timeout{0};
  std::chrono::milliseconds leave_timeout{0};  // how long leaving may wait for slower ranks
};

// The leader (rank 0's actor) collects every rank's proposal for initialize_model_parallel and
// answers all of them with one verdict: "" when all agree, else an error naming the first rank
// that differs. Other ranks learn the leader from a (leader_atom, actor) message; rank 0 leads
// itself.
// Group failure notices: (group_fail_atom, group, members, reason) from the engine goes to the
// registry, or in one process (no registry) to the members' actors as learnt from a
// (peers_atom, actors by rank) message; (group_failed_atom, group, reason) calls fail_group.
caf::behavior rank_actor(caf::event_based_actor* self, RankActorConfig config);

}  // namespace rankmesh
