#include "bootstrap/world_membership.hpp"

#include "bootstrap/blocking_request.hpp"
#include "bootstrap/control_codec.hpp"
#include "bootstrap/control_messages.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {

Joined join_world(caf::actor_system& system, const caf::actor& registry, const Member& self,
                  int world_size, const caf::actor& rank_actor, Deadline deadline) {
  std::string failure;
  Joined joined;
  const std::string no_answer = request_until(
      system, registry, deadline,
      [&](const std::string& refusal, const std::vector<std::string>& directory,
          const caf::actor& leader) {
        failure = refusal;
        for (const auto& line : directory) joined.members.push_back(decode_member(line));
        joined.leader = leader;
      },
      join_atom::value, self.rank, world_size, kControlProtocolVersion, self.node_id,
      self.address, rank_actor);
  if (!no_answer.empty()) failure = "the world did not form in time (" + no_answer + ")";
  if (!failure.empty())
    throw Error(Errc::peer_failed, "rank " + std::to_string(self.rank) + " could not join: " + failure);
  return joined;
}

void leave_world(caf::actor_system& system, const caf::actor& rank_actor, int rank,
                 Deadline deadline) {
  std::string failure;
  const std::string no_answer = request_until(
      system, rank_actor, deadline, [&](const std::string& refusal) { failure = refusal; },
      leave_atom::value);
  if (!no_answer.empty()) failure = "no answer in time (" + no_answer + ")";
  if (!failure.empty())
    throw Error(Errc::peer_failed, "rank " + std::to_string(rank) + ": leaving the world: " + failure);
}

}  // namespace rankmesh
