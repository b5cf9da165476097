#include "shm/shm_transport.hpp"

#include <map>

#include "rankmesh/error.hpp"
#include "shm/shm_channel.hpp"

namespace rankmesh {
namespace {

class ShmEndpoint final : public TransportEndpoint {
public:
  explicit ShmEndpoint(const TransportContext& context) : context_(context) {}

  std::vector<ChannelPair> connect(const std::vector<int>& peers, const std::vector<RankPlace>&,
                                   Exchange& exchange, Deadline deadline) override {
    const std::string self = "rank " + std::to_string(context_.rank);
    ShmOptions options;
    options.allocator = context_.allocator;
    options.log = context_.log;
    options.limits = context_.limits;
    // Each rank creates the segments it receives through and publishes their names; every rank
    // takes part in the exchange, even with nothing to publish.
    std::vector<std::unique_ptr<ShmChannel>> receiving;
    std::string names;
    for (int peer : peers) {
      options.peer_name = "rank " + std::to_string(peer);
      ShmChannel::Created created = ShmChannel::create(options);
      add_entry(names, peer, created.name);
      receiving.push_back(std::move(created.channel));
    }
    const std::vector<std::string> published = exchange.all_gather("shm segments", names, deadline);
    std::vector<ChannelPair> pairs(peers.size());
    std::vector<ShmChannel*> receivers, senders;
    for (std::size_t i = 0; i < peers.size(); ++i) {
      const int peer = peers[i];
      const std::string segment = entry_for(published.at(static_cast<std::size_t>(peer)), context_.rank);
      if (segment.empty())
        throw Error(Errc::invalid_config, self + ": rank " + std::to_string(peer) +
                                              " published no shared-memory segment for it "
                                              "(RANKMESH_TRANSPORT differs between ranks?)");
      // The peer announced its pid with its segments: only that process may be at the other
      // end of either direction.
      options.peer_name = "rank " + std::to_string(peer);
      options.peer_pid = shm::creator_of(segment);
      std::shared_ptr<ShmChannel> out = ShmChannel::open(segment, options);
      receiving[i]->expect_sender(options.peer_pid);
      std::shared_ptr<ShmChannel> in = std::move(receiving[i]);
      receivers.push_back(in.get());
      senders.push_back(out.get());
      pairs[i] = ChannelPair{std::move(out), std::move(in)};
    }
    // Receivers first: theirs only needs the senders attached (every rank opened its outbound
    // segments above), and a sender's handshake waits for its receiver's.
    receivers.insert(receivers.end(), senders.begin(), senders.end());
    for (ShmChannel* channel : receivers)
      if (!channel->wait_peer(deadline))
        throw Error(Errc::timeout, self + ": the shared-memory handshake with " + channel->name() +
                                       " did not finish in time");
    return pairs;
  }

private:
  const TransportContext context_;
};

class ShmTransport final : public Transport {
public:
  std::string_view name() const noexcept override { return "shm"; }
  Reach reach() const noexcept override { return Reach::same_node; }
  ChannelTraits traits() const noexcept override {
    return ChannelTraits{.copies_up_to = ShmOptions{}.inline_threshold, .lands_payloads = true};
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
