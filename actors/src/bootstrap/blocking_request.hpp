// How an engine thread asks an actor of the bootstrap and waits for the answer: every such
// request (join, exchange, leave) is bounded by the caller's deadline.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>

#include <caf/all.hpp>

#include "deadline.hpp"

namespace rankmesh {

// Sends `message` to `actor` and hands its answer to `on_answer`, waiting until `deadline` at
// most. Returns "" once answered, else why no answer came (CAF's reason).
template <class OnAnswer, class... Message>
std::string request_until(caf::actor_system& system, const caf::actor& actor, Deadline deadline,
                          OnAnswer on_answer, const Message&... message) {
  caf::scoped_actor self{system};
  const auto time_left = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::max(Clock::duration::zero(), deadline - Clock::now()));
  std::string no_answer;
  self->request(actor, time_left, message...)
      .receive(on_answer, [&](caf::error& error) { no_answer = system.render(error); });
  return no_answer;
}

}  // namespace rankmesh
