#include "inproc/inproc_transport.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <utility>

#include "inproc/inproc_channel.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

// Where the ranks of one process leave each other their channels: each rank puts its inbound
// channels here under a key only it publishes (through the Exchange), each peer takes the one
// meant for it. What nobody took (a peer failed meanwhile) goes when its endpoint does.
class Meeting {
public:
  static Meeting& instance() {
    static Meeting meeting;
    return meeting;
  }
  std::string new_key() { return "inproc-" + std::to_string(++next_key_); }
  void put(const std::string& key, int reader, std::shared_ptr<InprocChannel> channel) {
    std::lock_guard lock(mutex_);
    left_[{key, reader}] = std::move(channel);
  }
  std::shared_ptr<InprocChannel> take(const std::string& key, int reader) {
    std::lock_guard lock(mutex_);
    auto it = left_.find({key, reader});
    if (it == left_.end()) return nullptr;
    std::shared_ptr<InprocChannel> channel = std::move(it->second);
    left_.erase(it);
    return channel;
  }
  void forget(const std::string& key) {
    std::lock_guard lock(mutex_);
    std::erase_if(left_, [&](const auto& entry) { return entry.first.first == key; });
  }

private:
  std::atomic<std::uint64_t> next_key_{0};
  std::mutex mutex_;
  std::map<std::pair<std::string, int>, std::shared_ptr<InprocChannel>> left_;
};

class InprocEndpoint final : public TransportEndpoint {
public:
  InprocEndpoint(int rank, Allocator allocate)
      : rank_(rank), key_(Meeting::instance().new_key()), allocate_(std::move(allocate)) {}
  ~InprocEndpoint() override { Meeting::instance().forget(key_); }

  std::vector<ChannelPair> connect(const std::vector<int>& peers, const std::vector<RankPlace>&,
                                   Exchange& exchange, Deadline deadline) override {
    std::vector<ChannelPair> pairs(peers.size());
    for (std::size_t i = 0; i < peers.size(); ++i) {
      auto inbound = std::make_shared<InprocChannel>(allocate_);
      Meeting::instance().put(key_, peers[i], inbound);
      pairs[i].inbound = std::move(inbound);
    }
    const std::vector<std::string> keys = exchange.all_gather("inproc channels", key_, deadline);
    for (std::size_t i = 0; i < peers.size(); ++i) {
      pairs[i].outbound = Meeting::instance().take(keys.at(static_cast<std::size_t>(peers[i])), rank_);
      if (!pairs[i].outbound)
        throw Error(Errc::invalid_config, "rank " + std::to_string(rank_) + ": rank " +
                                              std::to_string(peers[i]) +
                                              " left no inproc channel for it (not in this process?)");
    }
    // Every peer has taken its channel before any endpoint may go and forget what it left.
    exchange.all_gather("inproc channels taken", {}, deadline);
    return pairs;
  }

private:
  const int rank_;
  const std::string key_;
  const Allocator allocate_;  // this rank's: where its inbound channels' small tensors land
};

class InprocTransport final : public Transport {
public:
  std::string_view name() const noexcept override { return "inproc"; }
  Reach reach() const noexcept override { return Reach::same_process; }
  ChannelTraits traits() const noexcept override { return InprocChannel::kTraits; }
  std::unique_ptr<TransportEndpoint> open(const TransportContext& context) const override {
    return std::make_unique<InprocEndpoint>(context.rank, context.allocator);
  }
};

}  // namespace

const Transport& inproc_transport() {
  static const InprocTransport transport;
  return transport;
}

}  // namespace rankmesh
