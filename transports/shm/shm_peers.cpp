#include "shm/shm_peers.hpp"

#include <optional>
#include <system_error>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

// One direction to or from a peer, made on its first use.
class LazyShmChannel final : public Channel {
public:
  LazyShmChannel(std::shared_ptr<ShmPeers> peers, int peer, bool receiving)
      : Channel(peers->traits(receiving)), peers_(std::move(peers)), peer_(peer),
        receiving_(receiving) {}

  void send(Frame& frame, Deadline start_by, Deadline deadline) override {
    const bool first = made_.load(std::memory_order_acquire) == nullptr;
    made(start_by).send(frame, start_by, deadline);
    if (first) peers_->receive_ahead(peer_);  // while the peer takes it in
  }
  bool recv(Frame& frame, Deadline deadline) override { return made(deadline).recv(frame, deadline); }
  void close(const std::string& reason) override { peers_->close(peer_, receiving_, reason); }
  void land(const Landing* landing) noexcept override {
    landing_ = landing;
    if (ShmChannel* channel = made_.load(std::memory_order_acquire)) channel->land(landing);
  }
  bool wait_released(Deadline deadline) override {
    ShmChannel* channel = made_.load(std::memory_order_acquire);
    return channel == nullptr || channel->wait_released(deadline);  // nothing sent: nothing lent
  }
  int peer_pid() const noexcept override { return peers_->pid_of(peer_); }

private:
  ShmChannel& made(Deadline deadline) {
    if (ShmChannel* channel = made_.load(std::memory_order_acquire)) return *channel;
    ShmChannel& channel = receiving_ ? peers_->receiver(peer_) : peers_->sender(peer_, deadline);
    channel.land(landing_);
    made_.store(&channel, std::memory_order_release);
    return channel;
  }

  const std::shared_ptr<ShmPeers> peers_;
  const int peer_;
  const bool receiving_;
  std::atomic<ShmChannel*> made_{nullptr};  // owned by peers_
  const Landing* landing_ = nullptr;
};

}  // namespace

struct ShmPeers::Peer {
  int rank = 0;
  int pid = 0;
  std::string inbox_name;
  shm::ProcessWatch watch;
  std::mutex inbox_mutex;
  std::optional<ShmInbox> inbox;  // its inbox, mapped on first need
  // Each direction is made under its own lock: a sender waiting for an offer never holds up the
  // receiver. The channels are set, and the reasons kept, under closed_mutex too, so that close()
  // reaches a channel while its direction is busy being made.
  std::mutex in_mutex, out_mutex, closed_mutex;
  std::shared_ptr<ShmChannel> in, out;
  std::string failed_ahead;  // the last offer send_ahead could not attach to
  std::string in_closed, out_closed;  // why a direction was closed
};

std::shared_ptr<ShmPeers> ShmPeers::create(const TransportContext& context) {
  return std::shared_ptr<ShmPeers>(new ShmPeers(context));
}

ShmPeers::ShmPeers(const TransportContext& context)
    : context_(context), probe_word_(shm::random_u64()),
      inbox_(ShmInbox::create(context.world_size, probe_word_)) {
  options_.allocator = context_.allocator;
  options_.log = context_.log;
  options_.limits = context_.limits;
}

ShmPeers::~ShmPeers() { stop(); }

std::vector<ChannelPair> ShmPeers::connect(const std::vector<int>& peers,
                                           const std::vector<std::string>& inboxes) {
  peers_.resize(static_cast<std::size_t>(context_.world_size));
  ranks_ = peers;
  std::vector<ChannelPair> pairs;
  for (int rank : peers) {
    const std::string& name = inboxes.at(static_cast<std::size_t>(rank));
    if (shm::creator_of(name) == 0)
      throw Error(Errc::invalid_config, "rank " + std::to_string(context_.rank) + ": rank " +
                                            std::to_string(rank) +
                                            " published no shared-memory inbox "
                                            "(RANKMESH_TRANSPORT differs between ranks?)");
    auto peer = std::make_unique<Peer>();
    peer->rank = rank;
    peer->inbox_name = name;
    peer->pid = shm::creator_of(name);
    peer->watch = shm::ProcessWatch(peer->pid);
    peers_[static_cast<std::size_t>(rank)] = std::move(peer);
  }
  for (int rank : peers)
    pairs.push_back(ChannelPair{std::make_shared<LazyShmChannel>(shared_from_this(), rank, false),
                                std::make_shared<LazyShmChannel>(shared_from_this(), rank, true)});
  answering_ = std::thread([this] { answer(); });
  return pairs;
}

void ShmPeers::stop() {
  stopping_.store(true);
  inbox_.wake();
  if (answering_.joinable()) answering_.join();
}

ShmPeers::Peer& ShmPeers::at(int peer) const { return *peers_.at(static_cast<std::size_t>(peer)); }

int ShmPeers::pid_of(int peer) const noexcept { return peers_[static_cast<std::size_t>(peer)]->pid; }

ChannelTraits ShmPeers::traits(bool receiving) const noexcept {
  return shm_traits(options_, receiving);
}

ShmInbox& ShmPeers::inbox_of(Peer& peer) {
  std::lock_guard lock(peer.inbox_mutex);
  if (peer.inbox) return *peer.inbox;
  try {
    peer.inbox = ShmInbox::open(peer.inbox_name, peer.pid, context_.world_size);
  } catch (const std::system_error& e) {  // its process is gone (its memfd with it)
    throw ChannelClosed("rank " + std::to_string(peer.rank) + " (pid " + std::to_string(peer.pid) +
                        ") is gone before the shm channel with it was made: " + e.what());
  }
  return *peer.inbox;
}

ShmChannel& ShmPeers::receiver(int rank) {
  Peer& peer = at(rank);
  std::lock_guard lock(peer.in_mutex);
  {
    std::lock_guard closed(peer.closed_mutex);
    if (!peer.in_closed.empty()) throw ChannelClosed(peer.in_closed);
  }
  if (peer.in) return *peer.in;  // offered when made: the peer finds it in its inbox
  ShmOptions options = options_;
  options.peer_name = "rank " + std::to_string(rank);
  ShmChannel::Created created = ShmChannel::create(std::move(options));
  created.channel->expect_sender(peer.pid);
  // Checked before the offer, so that the sender lends large payloads from its first frame
  // without waiting for us (we may be busy sending to it).
  ShmInbox& inbox = inbox_of(peer);
  created.channel->probe_sender(peer.pid, inbox.probe_address(), inbox.probe_value());
  {
    std::lock_guard closed(peer.closed_mutex);
    peer.in = std::move(created.channel);
  }
  inbox.post_offer(context_.rank, created.name);
  peer.in->prefault();  // while the peer attaches
  return *peer.in;
}

ShmChannel& ShmPeers::sender(int rank, Deadline deadline) {
  Peer& peer = at(rank);
  std::lock_guard lock(peer.out_mutex);
  bool asked = false;
  while (!peer.out) {
    // Read before anything is looked at: a close() or an offer after this moves it (wake()).
    const std::uint32_t seen = inbox_.epoch();
    {
      std::lock_guard closed(peer.closed_mutex);
      if (!peer.out_closed.empty()) throw ChannelClosed(peer.out_closed);
    }
    if (const std::string segment = inbox_.offer(rank); !segment.empty()) {
      attach(peer, segment);
      break;
    }
    if (!asked) inbox_of(peer).post_want(context_.rank);
    asked = true;
    if (!peer.watch.alive()) {
      const std::string why = "rank " + std::to_string(rank) + " (pid " + std::to_string(peer.pid) +
                              ") died before the shm channel to it was made";
      close(rank, false, why);
      throw ChannelClosed(why);
    }
    if (Clock::now() >= deadline)
      throw ChannelTimeout("shm channel to rank " + std::to_string(rank) +
                           ": it did not make the channel before the deadline");
    inbox_.wait(seen, std::min(deadline, Clock::now() + options_.liveness_interval));
  }
  return *peer.out;
}

// Under peer.out_mutex.
void ShmPeers::attach(Peer& peer, const std::string& segment) {
  ShmOptions options = options_;
  options.peer_name = "rank " + std::to_string(peer.rank);
  options.peer_pid = peer.pid;
  std::shared_ptr<ShmChannel> out;
  try {
    out = ShmChannel::open(segment, std::move(options));
  } catch (const std::system_error& e) {  // it closed its end and stopped offering it
    throw ChannelClosed("shm channel to rank " + std::to_string(peer.rank) + ": " + e.what());
  }
  std::lock_guard closed(peer.closed_mutex);
  peer.out = std::move(out);
  if (!peer.out_closed.empty()) peer.out->close(peer.out_closed);  // closed while we connected
}

// A peer offers a segment when it waits to receive from us, or after its first send to us (for
// the answer): a send is coming, and mostly an answer to it. Attaching now, and making the
// direction for the answer, takes the opening, the making and the first page faults (~0.3 ms
// each in a VM, on both sides) off the path of the first round trip. An application thread
// busy with this direction (it holds the lock while it waits for an offer) attaches itself; a
// failure is the send's to report, so an offer that failed here is not tried again here.
void ShmPeers::send_ahead(int rank) noexcept {
  Peer& peer = at(rank);
  {
    std::unique_lock lock(peer.out_mutex, std::try_to_lock);
    if (!lock.owns_lock() || peer.out) return;
    try {
      {
        std::lock_guard closed(peer.closed_mutex);
        if (!peer.out_closed.empty()) return;
      }
      const std::string segment = inbox_.offer(rank);
      if (segment.empty() || segment == peer.failed_ahead) return;
      peer.failed_ahead = segment;
      attach(peer, segment);
      peer.failed_ahead.clear();
      peer.out->prefault();
    } catch (const std::exception&) {
      return;
    }
  }
  receive_ahead(rank);
}

// A peer we send to first mostly answers: its first send then finds our side made and offered,
// with no request of its own, and waits for nobody. Made while the peer takes in our first
// frame. A direction closed meanwhile is the receive's to report, not the send's.
void ShmPeers::receive_ahead(int rank) noexcept {
  try {
    receiver(rank);
  } catch (const std::exception&) {
  }
}

void ShmPeers::close(int rank, bool receiving, const std::string& reason) {
  Peer& peer = at(rank);
  std::shared_ptr<ShmChannel> made;
  {
    std::lock_guard closed(peer.closed_mutex);
    std::string& why = receiving ? peer.in_closed : peer.out_closed;
    if (why.empty()) why = reason;
    made = receiving ? peer.in : peer.out;
  }
  if (made)
    made->close(reason);  // thread-safe: ends a send, a receive or a handshake waiting on it
  else if (!receiving)
    inbox_.wake();  // a sender waiting for the offer sees the reason
}

void ShmPeers::answer() {
  while (!stopping_.load()) {
    const std::uint32_t seen = inbox_.epoch();
    for (int rank : ranks_) {
      if (inbox_.has_offer(rank)) send_ahead(rank);
      if (!inbox_.take_want(rank)) continue;
      try {
        receiver(rank);
      } catch (const std::exception& e) {
        if (context_.log)
          context_.log("rank " + std::to_string(context_.rank) + ": could not make the shm channel from rank " +
                       std::to_string(rank) + ": " + e.what());
      }
    }
    inbox_.wait(seen, Clock::now() + std::chrono::milliseconds(200));
  }
}

}  // namespace rankmesh
