#include "bootstrap/registry_exchange.hpp"

#include "bootstrap/blocking_request.hpp"
#include "bootstrap/control_messages.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {

std::vector<std::string> RegistryExchange::all_gather(const std::string& round,
                                                      const std::string& value, Deadline deadline) {
  std::string failure;
  std::vector<std::string> values;
  const std::string no_answer = request_until(
      system_, registry_, deadline,
      [&](const std::string& refusal, const std::vector<std::string>& every_rank) {
        failure = refusal;
        values = every_rank;
      },
      exchange_atom::value, round, rank_, value);
  if (!no_answer.empty())
    throw Error(Errc::timeout, "rank " + std::to_string(rank_) + ": exchanging " + round +
                                   ": no answer in time (" + no_answer + ")");
  if (!failure.empty())
    throw Error(Errc::peer_failed, "rank " + std::to_string(rank_) + ": exchanging " + round +
                                       " failed: " + failure);
  return values;
}

}  // namespace rankmesh
