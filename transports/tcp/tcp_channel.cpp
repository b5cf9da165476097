#include "tcp/tcp_channel.hpp"

#ifndef ASIO_STANDALONE
#define ASIO_STANDALONE
#endif
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <iostream>
#include <list>
#include <system_error>
#include <thread>
#include <utility>

#include "rankmesh/error.hpp"
#include "parker.hpp"
#include "tcp/socket_io.hpp"

namespace rankmesh {
namespace {

constexpr std::size_t kStagingBytes = 64 * 1024;

LogFn or_stderr(LogFn log) {
  if (log) return log;
  return [](const std::string& line) { std::cerr << "rankmesh: " + line + "\n" << std::flush; };
}

std::string seconds(std::chrono::nanoseconds duration) {
  const double s = std::chrono::duration<double>(duration).count();
  std::string text = std::to_string(s);
  text.erase(text.find_last_not_of('0') + 1);
  if (text.back() == '.') text.pop_back();
  return text + " s";
}

}  // namespace

class TcpLink::Outbound final : public Channel {
public:
  explicit Outbound(TcpLink& link) : Channel(kOutboundTraits), link_(link) {}
  void send(Frame& frame, Deadline deadline) override { link_.send(frame, deadline); }
  bool recv(Frame&, Deadline) override {
    throw Error(Errc::invalid_argument, "recv on the outbound tcp channel to " + link_.peer_name());
  }
  void close(const std::string& reason) override { link_.close(reason); }
  bool wait_released(Deadline deadline) override { return link_.finish_writing(deadline); }

private:
  TcpLink& link_;
};

class TcpLink::Inbound final : public Channel {
public:
  explicit Inbound(TcpLink& link) : Channel(kInboundTraits), link_(link) {}
  void send(Frame&, Deadline) override {
    throw Error(Errc::invalid_argument, "send on the inbound tcp channel from " + link_.peer_name());
  }
  bool recv(Frame& frame, Deadline deadline) override { return link_.recv(frame, deadline); }
  void close(const std::string& reason) override { link_.close(reason); }
  void land(const Landing* landing) noexcept override {
    std::lock_guard lock(link_.recv_mutex_);
    link_.decoder_.land(landing);
  }

private:
  TcpLink& link_;
};

TcpLink::TcpLink(int fd, PeerIdentity peer, TcpOptions options)
    : fd_(fd),
      peer_(peer),
      peer_name_("rank " + std::to_string(peer.rank) + " (" + net::peer_address(fd) + ")"),
      log_(or_stderr(std::move(options.log))),
      limits_(options.limits),
      start_thread_(options.start_thread ? std::move(options.start_thread)
                                         : [](std::function<void()> body) {
                                             return std::thread(std::move(body));
                                           }),
      decoder_(std::move(options.allocator), options.limits),
      staging_(new std::uint8_t[kStagingBytes]),
      outbound_(std::make_unique<Outbound>(*this)),
      inbound_(std::make_unique<Inbound>(*this)) {
  net::set_nonblocking(fd_);
  net::set_nodelay(fd_);
}

TcpLink::~TcpLink() {
  close("the link to " + peer_name_ + " was destroyed");
  {
    std::lock_guard lock(writer_mutex_);
    stop_writer_ = true;
  }
  writer_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  ::close(fd_);
}

Channel& TcpLink::outbound() noexcept { return *outbound_; }
Channel& TcpLink::inbound() noexcept { return *inbound_; }

void TcpLink::close(const std::string& reason) {
  {
    std::lock_guard lock(close_mutex_);
    if (!closed_.load(std::memory_order_relaxed)) {
      reason_ = reason;
      closed_.store(true, std::memory_order_release);
      ::shutdown(fd_, SHUT_RDWR);  // wakes a send or recv waiting in poll
    }
  }
  // The writer checks closed() before every write and waits in slices of 100 ms, and writes on a
  // shut-down socket fail at once, so this wait is short.
  std::unique_lock writer(writer_mutex_);
  writer_cv_.wait(writer, [&] { return !writing_; });
}

void TcpLink::fail(const std::string& why) {
  close_with_error(why);
  throw_closed();
}

void TcpLink::close_with_error(const std::string& why) {
  bool first = false;
  {
    std::lock_guard lock(close_mutex_);
    if (!closed_.load(std::memory_order_relaxed)) {
      reason_ = "connection to " + peer_name_ + " closed: " + why;
      closed_.store(true, std::memory_order_release);
      ::shutdown(fd_, SHUT_RDWR);
      first = true;
    }
  }
  if (first) log_(reason_);
}

void TcpLink::throw_closed() const {
  std::lock_guard lock(close_mutex_);
  throw ChannelClosed(reason_);
}

bool TcpLink::finish_writing(Deadline deadline) {
  {
    std::unique_lock writer(writer_mutex_);
    if (!writer_cv_.wait_until(writer, deadline, [&] { return !writing_ || closed(); }))
      return false;
  }
  if (closed()) throw_closed();
  return true;
}

void TcpLink::send(Frame& frame, Deadline deadline) {
  std::lock_guard lock(send_mutex_);
  if (closed()) throw_closed();
  check_frame_limits(frame, limits_);
  try {
    wait_payloads_ready(frame, deadline);
  } catch (const Error& error) {
    if (error.code() != Errc::timeout) throw;
    throw ChannelTimeout("sending to " + peer_name_ + ": " + error.what());
  }
  if (!finish_writing(deadline))
    throw ChannelTimeout(peer_name_ + " has not taken the previous frame before the deadline");
  const std::span<const iovec> spans = encoder_.encode(frame, next_seq_);
  unsent_.assign(spans.begin(), spans.end());
  std::size_t first = 0;  // unsent_[first] is the next span with bytes left
  while (first < unsent_.size()) {
    const ssize_t n = write_some(first);
    if (n > 0 || (n < 0 && errno == EINTR)) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (closed()) throw_closed();
      hand_to_writer(frame, first);  // the peer's buffers are full
      break;
    }
    if (closed()) throw_closed();
    fail(std::string("sending failed: ") + std::strerror(errno));
  }
  ++next_seq_;
  frame.tensors.clear();
}

void TcpLink::hand_to_writer(Frame& frame, std::size_t first) {
  if (!writer_.joinable()) {
    try {
      writer_ = start_thread_([this] { writer_loop(); });
    } catch (const std::exception& error) {
      // Part of the frame is on the wire and nobody would write the rest: the stream is over.
      fail(std::string("cannot start the thread that finishes frames the peer does not take "
                       "at once: ") +
           error.what());
    }
  }
  std::lock_guard writer(writer_mutex_);
  writing_first_ = first;
  // The caller may reuse its frame as soon as send returns. A vector swap keeps each buffer
  // where it is, so unsent_ now points into writing_metadata_; the frame gets the spent one.
  writing_tensors_ = std::move(frame.tensors);
  writing_metadata_.swap(frame.metadata);
  frame.metadata.clear();
  writing_ = true;
  writer_cv_.notify_all();
}

ssize_t TcpLink::write_some(std::size_t& first) {
  msghdr message{};
  message.msg_iov = unsent_.data() + first;
  message.msg_iovlen = std::min<std::size_t>(unsent_.size() - first, IOV_MAX);
  const ssize_t n = ::sendmsg(fd_, &message, MSG_NOSIGNAL);
  auto left = static_cast<std::size_t>(std::max<ssize_t>(n, 0));
  while (left > 0 && left >= unsent_[first].iov_len) left -= unsent_[first++].iov_len;
  if (left > 0) {
    unsent_[first].iov_base = static_cast<std::uint8_t*>(unsent_[first].iov_base) + left;
    unsent_[first].iov_len -= left;
  }
  return n;
}

std::string TcpLink::write_rest(std::size_t first) {
  while (first < unsent_.size()) {
    if (closed()) return "";
    const ssize_t n = write_some(first);
    if (n > 0 || (n < 0 && errno == EINTR)) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Short slices, so that a close is noticed promptly.
      net::wait_until(fd_, POLLOUT, deadline_after(std::chrono::milliseconds(100)));
      continue;
    }
    return std::string("sending failed: ") + std::strerror(errno);
  }
  return "";
}

void TcpLink::writer_loop() {
  std::unique_lock lock(writer_mutex_);
  while (true) {
    writer_cv_.wait(lock, [&] { return writing_ || stop_writer_; });
    if (stop_writer_) return;
    const std::size_t first = writing_first_;
    lock.unlock();
    const std::string error = write_rest(first);
    if (!error.empty()) close_with_error(error);
    lock.lock();
    writing_tensors_.clear();
    writing_ = false;
    writer_cv_.notify_all();
  }
}

bool TcpLink::recv(Frame& frame, Deadline deadline) {
  std::lock_guard lock(recv_mutex_);
  if (closed()) throw_closed();
  try {
    while (!decoder_.ready()) {
      if (staged_begin_ < staged_end_) {
        staged_begin_ += decoder_.feed({staging_.get() + staged_begin_, staged_end_ - staged_begin_});
        continue;
      }
      // Read the rest of the current part in place, and whatever follows into the staging buffer.
      const std::span<std::uint8_t> part = decoder_.next_buffer();
      iovec into[2] = {{part.data(), part.size()}, {staging_.get(), kStagingBytes}};
      const ssize_t n = ::readv(fd_, into, 2);
      if (n > 0) {
        const std::size_t in_part = std::min(static_cast<std::size_t>(n), part.size());
        staged_begin_ = 0;
        staged_end_ = static_cast<std::size_t>(n) - in_part;
        decoder_.commit(in_part);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (closed()) throw_closed();
      if (n == 0)
        fail(decoder_.mid_frame() ? "the peer closed the connection in the middle of a frame"
                                  : "the peer closed the connection");
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        // The answer is often microseconds away: poll without sleeping for a bounded time (as
        // MPI does) before sleeping in poll(), whose wake-up costs ~20 us.
        auto readable = [this] {
          pollfd entry{fd_, POLLIN, 0};
          return ::poll(&entry, 1, 0) != 0;
        };
        if (!spin_until(readable, deadline, spin_budget()) &&
            !net::wait_until(fd_, POLLIN, deadline))
          return false;
        continue;
      }
      fail(std::string("receiving failed: ") + std::strerror(errno));
    }
  } catch (const ChannelClosed&) {
    throw;
  } catch (const std::exception& error) {
    fail(error.what());
  }
  decoder_.take(frame);
  return true;
}

struct TcpListener::Impl {
  struct Handshake {
    // Guarded by Impl::mutex:
    int fd;                 // -1 once closed or handed to a link
    bool evicted = false;   // shut down to make room for a newer connection
    bool admitted = false;  // proved the secret: no longer evicted
    std::string peer;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  TcpListenerOptions options;
  OnLink on_link;
  LogFn log;
  int listen_fd = -1;
  int wake_fd = -1;
  std::uint16_t port = 0;
  std::string address;
  std::thread acceptor;

  std::mutex mutex;
  bool stopping = false;
  std::list<Handshake> handshakes;

  void accept_loop();
  void authenticate(Handshake& handshake);
  void reap();
  // Holds `mutex`. Handshakes that occupy a slot of the pool.
  std::size_t in_progress() const;
  // Holds `mutex`. With the pool full, drops the oldest handshake that has not proven the secret.
  void make_room();
};

TcpListener::TcpListener(TcpListenerOptions options, OnLink on_link)
    : impl_(std::make_unique<Impl>()) {
  Impl& impl = *impl_;
  impl.log = or_stderr(options.link.log);
  impl.options = std::move(options);
  impl.options.link.log = impl.log;
  impl.on_link = std::move(on_link);
  const std::string where = impl.options.address + ":" + std::to_string(impl.options.port);
  if (impl.options.secret.empty())
    throw Error(Errc::invalid_config, "tcp listener on " + where + ": no shared secret");

  asio::io_context io;
  asio::error_code ec;
  asio::ip::tcp::resolver resolver(io);
  auto endpoints = resolver.resolve(impl.options.address, std::to_string(impl.options.port),
                                    asio::ip::resolver_base::passive |
                                        asio::ip::resolver_base::numeric_service,
                                    ec);
  if (ec || endpoints.empty())
    throw Error(Errc::invalid_config,
                "cannot listen on " + where + ": the address does not resolve: " + ec.message());
  const asio::ip::tcp::endpoint endpoint = *endpoints.begin();
  asio::ip::tcp::acceptor acceptor(io);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw Error(Errc::invalid_config, "cannot listen on " + where + ": " + ec.message());
  const asio::ip::tcp::endpoint bound = acceptor.local_endpoint(ec);
  impl.port = bound.port();
  impl.address = (bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                          : bound.address().to_string()) +
                 ":" + std::to_string(impl.port);
  impl.listen_fd = acceptor.release(ec);
  net::set_nonblocking(impl.listen_fd);
  ::fcntl(impl.listen_fd, F_SETFD, FD_CLOEXEC);
  impl.wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (impl.wake_fd < 0) {
    ::close(impl.listen_fd);
    throw Error(Errc::invalid_config, std::string("eventfd failed: ") + std::strerror(errno));
  }
  impl.acceptor = std::thread([&impl] { impl.accept_loop(); });
}

TcpListener::~TcpListener() { stop(); }

std::uint16_t TcpListener::port() const noexcept { return impl_->port; }
std::string TcpListener::address() const { return impl_->address; }

std::size_t TcpListener::handshakes_in_progress() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->in_progress();
}

void TcpListener::stop() {
  Impl& impl = *impl_;
  {
    std::lock_guard lock(impl.mutex);
    if (impl.stopping) return;
    impl.stopping = true;
    for (Impl::Handshake& handshake : impl.handshakes)
      if (handshake.fd >= 0) ::shutdown(handshake.fd, SHUT_RDWR);
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t written = ::write(impl.wake_fd, &one, sizeof(one));
  if (impl.acceptor.joinable()) impl.acceptor.join();
  // The acceptor has stopped, so the list no longer grows.
  for (Impl::Handshake& handshake : impl.handshakes)
    if (handshake.thread.joinable()) handshake.thread.join();
  impl.handshakes.clear();
  ::close(impl.listen_fd);
  ::close(impl.wake_fd);
}

void TcpListener::Impl::reap() {
  std::lock_guard lock(mutex);
  for (auto it = handshakes.begin(); it != handshakes.end();) {
    if (it->done.load(std::memory_order_acquire)) {
      it->thread.join();
      it = handshakes.erase(it);
    } else {
      ++it;
    }
  }
}

void TcpListener::Impl::accept_loop() {
  pollfd fds[2] = {{listen_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
  while (true) {
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
      log("tcp listener " + address + ": poll failed, no longer accepting: " + std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
        continue;
      log("tcp listener " + address + ": accept failed: " + std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // e.g. out of descriptors
      continue;
    }
    reap();
    std::lock_guard lock(mutex);
    if (stopping) {
      ::close(fd);
      return;
    }
    make_room();
    Handshake& handshake = handshakes.emplace_back();
    handshake.fd = fd;
    handshake.peer = net::peer_address(fd);
    try {
      handshake.thread = std::thread([this, &handshake] { authenticate(handshake); });
    } catch (const std::system_error& error) {
      log("tcp listener " + address + ": dropped a connection from " + handshake.peer +
          ": cannot start a thread for its handshake: " + error.what());
      ::close(fd);
      handshakes.pop_back();
    }
  }
}

std::size_t TcpListener::Impl::in_progress() const {
  return static_cast<std::size_t>(std::count_if(
      handshakes.begin(), handshakes.end(), [](const Handshake& handshake) {
        return !handshake.evicted && !handshake.done.load(std::memory_order_acquire);
      }));
}

void TcpListener::Impl::make_room() {
  if (in_progress() < std::max<std::size_t>(options.max_handshakes, 1)) return;
  for (Handshake& handshake : handshakes) {  // oldest first
    if (handshake.evicted || handshake.admitted || handshake.fd < 0 ||
        handshake.done.load(std::memory_order_acquire))
      continue;
    handshake.evicted = true;
    ::shutdown(handshake.fd, SHUT_RDWR);  // its thread's next read or write fails
    return;
  }
}

void TcpListener::Impl::authenticate(Handshake& handshake) {
  int fd;
  {
    std::lock_guard lock(mutex);
    fd = handshake.fd;
  }
  std::shared_ptr<TcpLink> link;
  // Once the peer has proven the secret, it keeps its slot: dropping it after this side has
  // accepted would leave the peer holding a dead link.
  auto admit = [&] {
    std::lock_guard lock(mutex);
    if (stopping || handshake.evicted) return false;
    handshake.admitted = true;
    return true;
  };
  try {
    const PeerIdentity peer = rankmesh::authenticate(
        fd, AuthRole::server, options.secret, options.self,
        deadline_after(options.handshake_timeout), admit);
    std::lock_guard lock(mutex);
    if (!stopping) {
      link = std::make_shared<TcpLink>(fd, peer, options.link);
      handshake.fd = -1;
    }
  } catch (const std::exception& error) {
    std::string why = error.what();
    bool quiet;
    bool evicted;
    {
      std::lock_guard lock(mutex);
      quiet = stopping;  // stop() cut the handshake short: nothing to report
      evicted = handshake.evicted;
    }
    if (evicted)
      why = "peer " + handshake.peer + " had not authenticated when the pool of " +
            std::to_string(options.max_handshakes) +
            " handshakes was full; dropped to make room for a newer connection";
    else if (const auto* e = dynamic_cast<const Error*>(&error); e && e->code() == Errc::timeout)
      why = "peer " + handshake.peer + " did not authenticate within " +
            seconds(options.handshake_timeout);
    if (!quiet) log("tcp listener " + address + ": dropped a connection: " + why);
  }
  {
    std::lock_guard lock(mutex);
    if (handshake.fd >= 0) {
      ::close(handshake.fd);
      handshake.fd = -1;
    }
  }
  if (link) {
    const std::string name = link->peer_name();
    try {
      on_link(std::move(link));
    } catch (const std::exception& error) {
      log("tcp listener " + address + ": the new link to " + name + " was refused: " + error.what());
    }
  }
  handshake.done.store(true, std::memory_order_release);
}

std::shared_ptr<TcpLink> tcp_connect(const std::string& host, std::uint16_t port,
                                     std::string_view secret, PeerIdentity self,
                                     Deadline deadline, TcpOptions options) {
  const std::string where = host + ":" + std::to_string(port);
  asio::io_context io;
  asio::error_code ec;
  asio::ip::tcp::resolver resolver(io);
  auto endpoints =
      resolver.resolve(host, std::to_string(port), asio::ip::resolver_base::numeric_service, ec);
  if (ec || endpoints.empty())
    throw Error(Errc::invalid_config, "cannot connect to " + where +
                                          ": the host does not resolve: " + ec.message());

  auto backoff = std::chrono::milliseconds(5);
  std::string last_error = "no address to try";
  while (true) {
    for (const auto& entry : endpoints) {
      const asio::ip::tcp::endpoint endpoint = entry.endpoint();
      const int fd = ::socket(endpoint.protocol().family(),
                              SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
      if (fd < 0) {
        last_error = std::strerror(errno);
        continue;
      }
      int error = 0;
      if (::connect(fd, endpoint.data(), static_cast<socklen_t>(endpoint.size())) != 0) {
        error = errno;
        if (error == EINPROGRESS) {
          if (!net::wait_until(fd, POLLOUT, deadline)) {
            ::close(fd);
            throw Error(Errc::timeout, "could not connect to " + where + " before the deadline");
          }
          socklen_t length = sizeof(error);
          ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
        }
      }
      if (error != 0) {
        last_error = std::strerror(error);
        ::close(fd);
        continue;
      }
      try {
        net::set_nodelay(fd);
        const PeerIdentity peer = authenticate(fd, AuthRole::client, secret, self, deadline);
        return std::make_shared<TcpLink>(fd, peer, std::move(options));
      } catch (const Error& error) {
        ::close(fd);
        // The listener drops handshakes it has no room or time for; a refusal (wrong secret,
        // another world) or the deadline ends the attempts.
        if (error.code() != Errc::peer_failed) throw;
        last_error = error.what();
      } catch (...) {
        ::close(fd);
        throw;
      }
    }
    const auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero())
      throw Error(Errc::timeout, "could not connect to " + where + " before the deadline: " +
                                     last_error);
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, left));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
  }
}

}  // namespace rankmesh
