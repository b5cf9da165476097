#include "transport_table.hpp"

#include "inproc/inproc_transport.hpp"
#include "rankmesh/error.hpp"
#include "shm/shm_transport.hpp"
#include "tcp/tcp_transport.hpp"

namespace rankmesh {

TransportTable transport_table() {
  static const Transport* const table[] = {
      &inproc_transport(),
      &shm_transport(),
      &tcp_transport(),
  };
  return table;
}

std::string transport_choices(TransportTable table) {
  std::string out = "auto";
  for (const Transport* transport : table) out += ", " + std::string(transport->name());
  return out;
}

const Transport* find_transport(TransportTable table, std::string_view name) noexcept {
  for (const Transport* transport : table)
    if (transport->name() == name) return transport;
  return nullptr;
}

std::vector<const Transport*> candidate_transports(TransportTable table, std::string_view forced,
                                                   Reach farthest) {
  if (forced != "auto") {
    const Transport* transport = find_transport(table, forced);
    if (transport == nullptr)
      throw Error(Errc::invalid_argument, "transport '" + std::string(forced) + "' is none of " +
                                              transport_choices(table));
    return {transport};
  }
  std::vector<const Transport*> candidates;
  for (const Transport* transport : table) {
    candidates.push_back(transport);
    if (transport->reach() >= farthest) break;
  }
  return candidates;
}

const Transport& transport_between(const std::vector<const Transport*>& candidates, int rank,
                                   int peer, const std::vector<RankPlace>& places) {
  const RankPlace& self = places.at(static_cast<std::size_t>(rank));
  const RankPlace& other = places.at(static_cast<std::size_t>(peer));
  for (const Transport* transport : candidates)
    if (reaches(transport->reach(), self, other)) return *transport;
  std::string names;
  for (const Transport* transport : candidates)
    names += (names.empty() ? "" : ", ") + std::string(transport->name());
  throw Error(Errc::invalid_config,
              "rank " + std::to_string(rank) + ": no transport (" + names + ") reaches rank " +
                  std::to_string(peer) +
                  (self.node == other.node ? ", another process" : " on another node (" + other.node + ")") +
                  (candidates.size() == 1 ? "; RANKMESH_TRANSPORT=" + names + " forces it" : ""));
}

}  // namespace rankmesh
