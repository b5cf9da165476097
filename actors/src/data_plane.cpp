#include "data_plane.hpp"

#include <algorithm>

#include "rankmesh/error.hpp"

namespace rankmesh {

DataPlane::DataPlane(TransportContext context, const std::string& forced, Reach farthest,
                     TransportTable table)
    : context_(std::move(context)),
      forced_(forced),
      candidates_(candidate_transports(table, forced, farthest)),
      outbound_(static_cast<std::size_t>(context_.world_size)),
      inbound_(static_cast<std::size_t>(context_.world_size)),
      same_node_(static_cast<std::size_t>(context_.world_size), false),
      shared_memory_(static_cast<std::size_t>(context_.world_size), false) {
  for (const Transport* transport : candidates_) endpoints_.push_back(transport->open(context_));
}

DataPlane::~DataPlane() {
  endpoints_.clear();  // no listener hands out links any more
  for (auto& channel : outbound_)
    if (channel) channel->close("the runtime shut down");
  for (auto& channel : inbound_)
    if (channel) channel->close("the runtime shut down");
}

std::string DataPlane::address() const {
  for (const auto& endpoint : endpoints_)
    if (std::string address = endpoint->address(); !address.empty()) return address;
  return {};
}

void DataPlane::connect(const std::vector<RankPlace>& places, Exchange& exchange,
                        Deadline deadline) {
  const int rank = context_.rank;
  const int world = context_.world_size;
  // Every rank must pick alike, or one would wait in a transport's rounds for ranks that never
  // come.
  const std::vector<std::string> forced = exchange.all_gather("transport", forced_, deadline);
  for (int peer = 0; peer < world; ++peer)
    if (forced[static_cast<std::size_t>(peer)] != forced_)
      throw Error(Errc::invalid_config,
                  "rank " + std::to_string(rank) + " runs with RANKMESH_TRANSPORT=" + forced_ +
                      ", rank " + std::to_string(peer) + " with " +
                      forced[static_cast<std::size_t>(peer)] + ": every rank must use the same");

  // Every rank works out the whole world's choice, so that all connect the transports some
  // pair uses, in table order, and skip the others together.
  std::vector<std::vector<int>> peers_of(candidates_.size());
  std::vector<bool> used(candidates_.size(), false);
  for (int a = 0; a < world; ++a)
    for (int b = a + 1; b < world; ++b) {
      const Transport& chosen = transport_between(candidates_, a, b, places);
      for (std::size_t i = 0; i < candidates_.size(); ++i) {
        if (candidates_[i] != &chosen) continue;
        used[i] = true;
        if (a == rank) peers_of[i].push_back(b);
        if (b == rank) peers_of[i].push_back(a);
      }
    }
  for (int peer = 0; peer < world; ++peer)
    same_node_[static_cast<std::size_t>(peer)] =
        places[static_cast<std::size_t>(peer)].node == places[static_cast<std::size_t>(rank)].node;
  for (std::size_t i = 0; i < candidates_.size(); ++i) {
    if (!used[i]) continue;
    std::vector<int>& peers = peers_of[i];
    std::sort(peers.begin(), peers.end());
    std::vector<ChannelPair> pairs = endpoints_[i]->connect(peers, places, exchange, deadline);
    for (std::size_t k = 0; k < peers.size(); ++k) {
      const auto peer = static_cast<std::size_t>(peers[k]);
      outbound_[peer] = std::move(pairs[k].outbound);
      inbound_[peer] = std::move(pairs[k].inbound);
      shared_memory_[peer] = candidates_[i]->shares_memory_segments();
    }
  }
}

}  // namespace rankmesh
