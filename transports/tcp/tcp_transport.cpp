#include "tcp/tcp_transport.hpp"

#include <condition_variable>
#include <map>
#include <mutex>

#include "rankmesh/error.hpp"
#include "tcp/tcp_listener.hpp"

namespace rankmesh {
namespace {

std::pair<std::string, std::uint16_t> split_address(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos)
    throw Error(Errc::malformed, "data-plane address '" + address + "' has no port");
  return {address.substr(0, colon), static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1)))};
}

ChannelPair channels_of(const std::shared_ptr<TcpLink>& link) {
  return ChannelPair{std::shared_ptr<Channel>(link, &link->outbound()),
                     std::shared_ptr<Channel>(link, &link->inbound())};
}

class TcpEndpoint final : public TransportEndpoint {
public:
  explicit TcpEndpoint(const TransportContext& context) : context_(context) {
    link_options_.allocator = context_.allocator;
    link_options_.log = context_.log;
    link_options_.limits = context_.limits;
    TcpListenerOptions listen;
    listen.address = context_.listen_address;
    listen.secret = context_.secret;
    listen.self = PeerIdentity{context_.rank, context_.world_size};
    listen.link = link_options_;
    listener_ = std::make_unique<TcpListener>(listen, [this](std::shared_ptr<TcpLink> link) {
      const int peer = link->peer().rank;
      std::lock_guard lock(accepted_mutex_);
      if (peer <= context_.rank || accepted_.count(peer)) {
        // Lower ranks are dialled by this rank; a second link from one rank is not ours to keep.
        link->close("unexpected connection from rank " + std::to_string(peer));
        if (context_.log)
          context_.log("rankmesh: rank " + std::to_string(context_.rank) +
                       " dropped an unexpected data-plane connection from rank " + std::to_string(peer));
        return;
      }
      accepted_[peer] = std::move(link);
      accepted_cv_.notify_all();
    });
  }
  // Links handed out stay open: their channels belong to the caller.
  ~TcpEndpoint() override { listener_->stop(); }

  std::string address() const override { return listener_->address(); }

  std::vector<ChannelPair> connect(const std::vector<int>& peers, const std::vector<RankPlace>&,
                                   Exchange& exchange, Deadline deadline) override {
    const std::vector<std::string> addresses =
        exchange.all_gather("tcp addresses", address(), deadline);
    // The higher rank of a pair dials, the lower one accepts: one link per pair.
    std::vector<ChannelPair> pairs(peers.size());
    std::vector<std::size_t> awaited;
    for (std::size_t i = 0; i < peers.size(); ++i) {
      const int peer = peers[i];
      if (peer > context_.rank) {
        awaited.push_back(i);
        continue;
      }
      auto [host, port] = split_address(addresses.at(static_cast<std::size_t>(peer)));
      pairs[i] = channels_of(tcp_connect(host, port, context_.secret,
                                         PeerIdentity{context_.rank, context_.world_size},
                                         deadline, link_options_));
    }
    std::unique_lock lock(accepted_mutex_);
    for (std::size_t i : awaited) {
      const int peer = peers[i];
      if (!accepted_cv_.wait_until(lock, deadline, [&] { return accepted_.count(peer) != 0; }))
        throw Error(Errc::timeout, "rank " + std::to_string(context_.rank) + ": rank " +
                                       std::to_string(peer) + " did not connect its data plane in time");
      pairs[i] = channels_of(accepted_.at(peer));
    }
    return pairs;
  }

private:
  const TransportContext context_;
  TcpOptions link_options_;
  std::mutex accepted_mutex_;
  std::condition_variable accepted_cv_;
  std::map<int, std::shared_ptr<TcpLink>> accepted_;  // by peer rank
  std::unique_ptr<TcpListener> listener_;
};

class TcpTransport final : public Transport {
public:
  std::string_view name() const noexcept override { return "tcp"; }
  Reach reach() const noexcept override { return Reach::any; }
  ChannelTraits traits() const noexcept override { return TcpLink::kInboundTraits; }
  std::unique_ptr<TransportEndpoint> open(const TransportContext& context) const override {
    return std::make_unique<TcpEndpoint>(context);
  }
};

}  // namespace

const Transport& tcp_transport() {
  static const TcpTransport transport;
  return transport;
}

}  // namespace rankmesh
