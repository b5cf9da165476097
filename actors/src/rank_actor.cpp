#include "rank_actor.hpp"

#include <map>
#include <memory>

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

}  // namespace

caf::behavior rank_actor(caf::event_based_actor* self, int rank, int world_size, caf::actor leader) {
  // Only the leader collects; the map lives as long as the actor.
  auto proposals = std::make_shared<std::map<int, Pending>>();
  return {
      [=](propose_atom, const std::string& proposal) {
        caf::actor target = leader ? leader : caf::actor_cast<caf::actor>(self);
        return self->delegate(target, check_atom::value, rank, proposal);
      },
      [=](check_atom, int from, const std::string& proposal) {
        // Answered later, once every rank has proposed: the promise takes over the request.
        (*proposals)[from] = Pending{proposal, self->make_response_promise()};
        if (static_cast<int>(proposals->size()) == world_size) {
          std::string outcome = verdict(*proposals);
          for (auto& entry : *proposals) entry.second.promise.deliver(outcome);
          proposals->clear();
        }
      },
  };
}

}  // namespace rankmesh
