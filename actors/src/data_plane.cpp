#include "data_plane.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

// Every rank must force the same transport, or one would wait in a transport's rounds for ranks
// that never come. The check rides on the first round an endpoint makes (its value carries this
// rank's choice), so that it costs no round of its own: a round through rank 0's registry costs
// ~50-70 ms of start-up at 64 ranks. That first round has one name whichever endpoint makes it,
// so ranks that chose differently still meet in it; a rank whose endpoints make none checks in a
// round of that name alone (finish).
class TransportCheck final : public Exchange {
public:
  TransportCheck(Exchange& exchange, int rank, std::string forced)
      : exchange_(exchange), rank_(rank), forced_(std::move(forced)) {}

  std::vector<std::string> all_gather(const std::string& round, const std::string& value,
                                      Deadline deadline) override {
    if (checked_) return exchange_.all_gather(round, value, deadline);
    return check(value, deadline);
  }

  void finish(Deadline deadline) {
    if (!checked_) check({}, deadline);
  }

private:
  std::vector<std::string> check(const std::string& value, Deadline deadline) {
    checked_ = true;
    // Transport names hold no newline; the endpoint's value follows the first one.
    std::vector<std::string> values = exchange_.all_gather("transport", forced_ + '\n' + value, deadline);
    for (std::size_t peer = 0; peer < values.size(); ++peer) {
      const std::size_t end = values[peer].find('\n');
      const std::string theirs = values[peer].substr(0, end);
      if (theirs != forced_)
        throw Error(Errc::invalid_config,
                    "rank " + std::to_string(rank_) + " runs with RANKMESH_TRANSPORT=" + forced_ +
                        ", rank " + std::to_string(peer) + " with " + theirs +
                        ": every rank must use the same");
      values[peer].erase(0, end == std::string::npos ? std::string::npos : end + 1);
    }
    return values;
  }

  Exchange& exchange_;
  const int rank_;
  const std::string forced_;
  bool checked_ = false;
};

}  // namespace

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
  TransportCheck checked(exchange, rank, forced_);

  // Every rank works out the whole world's choice, so that all connect the transports some
  // pair uses, in table order, and skip the others together.
  std::vector<std::vector<int>> peers_of(candidates_.size());
  std::vector<bool> used(candidates_.size(), false);
  try {
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
  } catch (const Error&) {
    checked.finish(deadline);  // ranks that forced different transports hear that first
    throw;
  }
  for (int peer = 0; peer < world; ++peer)
    same_node_[static_cast<std::size_t>(peer)] =
        places[static_cast<std::size_t>(peer)].node == places[static_cast<std::size_t>(rank)].node;
  for (std::size_t i = 0; i < candidates_.size(); ++i) {
    if (!used[i]) continue;
    std::vector<int>& peers = peers_of[i];
    std::sort(peers.begin(), peers.end());
    std::vector<ChannelPair> pairs = endpoints_[i]->connect(peers, places, checked, deadline);
    for (std::size_t k = 0; k < peers.size(); ++k) {
      const auto peer = static_cast<std::size_t>(peers[k]);
      outbound_[peer] = std::move(pairs[k].outbound);
      inbound_[peer] = std::move(pairs[k].inbound);
      shared_memory_[peer] = candidates_[i]->shares_memory_segments();
    }
  }
  checked.finish(deadline);
}

}  // namespace rankmesh
