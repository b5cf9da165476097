#include "shm/shm_transport.hpp"

#include "rankmesh/error.hpp"
#include "shm/shm_channel.hpp"
#include "shm/shm_peers.hpp"

namespace rankmesh {
namespace {

// Publishes one inbox per rank; the channels themselves are made when first used (shm_peers.hpp).
// The channels hold the ShmPeers, whose thread answers the inbox for as long as any of them
// lives: links outlive the endpoint, and a peer's first send may come long after this one closed.
class ShmEndpoint final : public TransportEndpoint {
public:
  explicit ShmEndpoint(const TransportContext& context) : context_(context) {}

  std::vector<ChannelPair> connect(const std::vector<int>& peers, const std::vector<RankPlace>&,
                                   Exchange& exchange, Deadline deadline) override {
    // Every rank takes part in the round, even with no shm peer (and then no inbox).
    if (!peers.empty()) peers_ = ShmPeers::create(context_);
    const std::vector<std::string> inboxes =
        exchange.all_gather("shm inboxes", peers_ ? peers_->inbox_name() : std::string(), deadline);
    if (!peers_) return {};
    return peers_->connect(peers, inboxes);
  }

private:
  const TransportContext context_;
  std::shared_ptr<ShmPeers> peers_;
};

class ShmTransport final : public Transport {
public:
  std::string_view name() const noexcept override { return "shm"; }
  Reach reach() const noexcept override { return Reach::same_node; }
  ChannelTraits traits() const noexcept override {
    return shm_traits(ShmOptions{}, true);
  }
  bool shares_memory_segments() const noexcept override { return true; }
  std::unique_ptr<TransportEndpoint> open(const TransportContext& context) const override {
    return std::make_unique<ShmEndpoint>(context);
  }
};

}  // namespace

const Transport& shm_transport() {
  static const ShmTransport transport;
  return transport;
}

}  // namespace rankmesh
