#include "pipe_transport.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "frame_codec.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh::test {
namespace {

// Waits until `fd` reports `events` (or an error, a hang-up): false at the deadline.
bool ready(int fd, short events, Deadline deadline) {
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd poller{fd, events, 0};
    const int got = ::poll(&poller, 1, static_cast<int>(std::max<std::int64_t>(0, left.count() + 1)));
    if (got > 0) return true;
    if (got == 0 && Clock::now() >= deadline) return false;
    if (got < 0 && errno != EINTR) return true;  // the read or write says what is wrong
  }
}

// One end of a socketpair, both directions: writes whole frames before send() returns (nothing
// is lent), reads payloads straight into their tensors.
class PipeLink {
public:
  PipeLink(int fd, const TransportContext& context)
      : fd_(fd), limits_(context.limits), log_(context.log), decoder_(context.allocator, context.limits),
        outbound_(*this), inbound_(*this) {}
  ~PipeLink() { ::close(fd_); }

  Channel& outbound() { return outbound_; }
  Channel& inbound() { return inbound_; }

  void close(const std::string& reason) {
    {
      std::lock_guard lock(reason_mutex_);
      if (closed_) return;
      reason_ = reason;
      closed_ = true;
    }
    ::shutdown(fd_, SHUT_RDWR);  // wakes this side's waits and ends the peer's stream
  }

private:
  class Outbound final : public Channel {
  public:
    explicit Outbound(PipeLink& link) : Channel(ChannelTraits{.lands_payloads = true}), link_(link) {}
    void send(Frame& frame, Deadline start_by, Deadline deadline) override {
      link_.send(frame, start_by, deadline);
    }
    bool recv(Frame&, Deadline) override {
      throw Error(Errc::invalid_argument, "recv on the sending direction of a pipe link");
    }
    void close(const std::string& reason) override { link_.close(reason); }

  private:
    PipeLink& link_;
  };
  class Inbound final : public Channel {
  public:
    explicit Inbound(PipeLink& link) : Channel(ChannelTraits{.lands_payloads = true}), link_(link) {}
    void send(Frame&, Deadline, Deadline) override {
      throw Error(Errc::invalid_argument, "send on the receiving direction of a pipe link");
    }
    bool recv(Frame& frame, Deadline deadline) override { return link_.recv(frame, deadline); }
    void close(const std::string& reason) override { link_.close(reason); }
    void land(const Landing* landing) noexcept override { link_.decoder_.land(landing); }

  private:
    PipeLink& link_;
  };

  [[noreturn]] void throw_closed() {
    std::lock_guard lock(reason_mutex_);
    throw ChannelClosed(reason_);
  }
  bool closed() {
    std::lock_guard lock(reason_mutex_);
    return closed_;
  }
  [[noreturn]] void fail(const std::string& why) {
    close("pipe link: " + why);
    if (log_) log_("pipe link: " + why);
    throw_closed();
  }

  void send(Frame& frame, Deadline start_by, Deadline deadline) {
    std::lock_guard lock(send_mutex_);
    if (closed()) throw_closed();
    check_frame_limits(frame, limits_);
    wait_payloads_ready(frame, start_by);
    std::span<const iovec> spans = encoder_.encode(frame, next_seq_);
    std::vector<iovec> unsent(spans.begin(), spans.end());
    std::size_t first = 0;
    bool started = false;
    while (first < unsent.size()) {
      if (!ready(fd_, POLLOUT, started ? deadline : start_by)) {
        if (!started) throw ChannelTimeout("pipe link: the peer took nothing until the deadline");
        fail("the peer stopped taking a frame halfway until the deadline");
      }
      msghdr message{};
      message.msg_iov = unsent.data() + first;
      message.msg_iovlen = unsent.size() - first;
      const ssize_t wrote = ::sendmsg(fd_, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (wrote < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        if (closed()) throw_closed();
        fail(std::string("the peer went away: ") + std::strerror(errno));
      }
      started = true;
      auto left = static_cast<std::size_t>(wrote);
      while (first < unsent.size() && left >= unsent[first].iov_len) left -= unsent[first++].iov_len;
      if (left > 0) {
        unsent[first].iov_base = static_cast<std::uint8_t*>(unsent[first].iov_base) + left;
        unsent[first].iov_len -= left;
      }
    }
    ++next_seq_;
    frame.tensors.clear();
    frame.metadata.clear();
  }

  bool recv(Frame& frame, Deadline deadline) {
    std::lock_guard lock(recv_mutex_);
    while (!decoder_.ready()) {
      if (closed()) throw_closed();
      if (!ready(fd_, POLLIN, deadline)) return false;
      const std::span<std::uint8_t> into = decoder_.next_buffer();
      const ssize_t got = ::recv(fd_, into.data(), into.size(), MSG_DONTWAIT);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (closed()) throw_closed();
      if (got <= 0) fail(got == 0 ? "the peer closed its end" : std::strerror(errno));
      try {
        decoder_.commit(static_cast<std::size_t>(got));
      } catch (const Error& error) {
        fail(error.what());
      }
    }
    decoder_.take(frame);
    return true;
  }

  const int fd_;
  const FrameLimits limits_;
  const LogFn log_;
  std::mutex reason_mutex_;
  bool closed_ = false;
  std::string reason_;
  std::mutex send_mutex_;
  FrameEncoder encoder_;
  std::uint64_t next_seq_ = 0;
  std::mutex recv_mutex_;
  FrameDecoder decoder_;
  Outbound outbound_;
  Inbound inbound_;
};

// The lower rank of a pair makes the socketpair and publishes, per higher peer, the end that
// peer takes: in one process a descriptor number names the same socket for every thread.
class PipeEndpoint final : public TransportEndpoint {
public:
  explicit PipeEndpoint(const TransportContext& context) : context_(context) {}

  std::vector<ChannelPair> connect(const std::vector<int>& peers, const std::vector<RankPlace>&,
                                   Exchange& exchange, Deadline deadline) override {
    std::vector<ChannelPair> pairs(peers.size());
    std::string offered;  // an entry per higher peer: the descriptor of its end
    for (std::size_t i = 0; i < peers.size(); ++i) {
      if (peers[i] < context_.rank) continue;
      int ends[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0)
        throw Error(Errc::invalid_config, std::string("socketpair: ") + std::strerror(errno));
      pairs[i] = channels_of(std::make_shared<PipeLink>(ends[0], context_));
      add_entry(offered, peers[i], std::to_string(ends[1]));
    }
    const std::vector<std::string> published = exchange.all_gather("pipe ends", offered, deadline);
    for (std::size_t i = 0; i < peers.size(); ++i) {
      if (peers[i] > context_.rank) continue;
      const std::string end = entry_for(published.at(static_cast<std::size_t>(peers[i])), context_.rank);
      if (end.empty())
        throw Error(Errc::invalid_config, "rank " + std::to_string(peers[i]) +
                                              " offered no pipe end to rank " +
                                              std::to_string(context_.rank));
      pairs[i] = channels_of(std::make_shared<PipeLink>(std::stoi(end), context_));
    }
    return pairs;
  }

private:
  static ChannelPair channels_of(const std::shared_ptr<PipeLink>& link) {
    return ChannelPair{std::shared_ptr<Channel>(link, &link->outbound()),
                       std::shared_ptr<Channel>(link, &link->inbound())};
  }

  const TransportContext context_;
};

class PipeTransport final : public Transport {
public:
  std::string_view name() const noexcept override { return "pipe"; }
  Reach reach() const noexcept override { return Reach::same_process; }
  ChannelTraits traits() const noexcept override { return ChannelTraits{.lands_payloads = true}; }
  std::unique_ptr<TransportEndpoint> open(const TransportContext& context) const override {
    return std::make_unique<PipeEndpoint>(context);
  }
};

}  // namespace

const Transport& pipe_transport() {
  static const PipeTransport transport;
  return transport;
}

}  // namespace rankmesh::test
