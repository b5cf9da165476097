#include "tcp/tcp_listener.hpp"

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
#include <cstring>
#include <list>
#include <system_error>
#include <thread>
#include <utility>

#include "rankmesh/error.hpp"
#include "tcp/socket_io.hpp"

namespace rankmesh {
namespace {

std::string seconds(std::chrono::nanoseconds duration) {
  const double s = std::chrono::duration<double>(duration).count();
  std::string text = std::to_string(s);
  text.erase(text.find_last_not_of('0') + 1);
  if (text.back() == '.') text.pop_back();
  return text + " s";
}

}  // namespace

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

namespace {

// "127.0.0.1:41234" or "[::1]:41234".
std::string endpoint_text(const asio::ip::tcp::endpoint& endpoint) {
  return (endpoint.address().is_v6() ? "[" + endpoint.address().to_string() + "]"
                                     : endpoint.address().to_string()) +
         ":" + std::to_string(endpoint.port());
}

}  // namespace

void TcpListener::bind_and_listen(Impl& impl, const std::string& where) {
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
  impl.address = endpoint_text(bound);
  impl.listen_fd = acceptor.release(ec);
}

void TcpListener::adopt_listening_socket(Impl& impl, const std::string& where) {
  const int fd = impl.options.listening_fd;
  const std::string what = "the listening socket handed over for " + where + " (descriptor " +
                           std::to_string(fd) + ")";
  int type = 0, listening = 0;
  socklen_t length = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0)
    throw Error(Errc::invalid_config, what + " is not a socket: " + std::strerror(errno));
  length = sizeof listening;
  if (type != SOCK_STREAM ||
      ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) != 0 || listening == 0)
    throw Error(Errc::invalid_config, what + " is not a listening stream socket");
  sockaddr_storage storage{};
  length = sizeof storage;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0 ||
      (storage.ss_family != AF_INET && storage.ss_family != AF_INET6))
    throw Error(Errc::invalid_config, what + " is not bound to an IP address");
  asio::ip::tcp::endpoint bound;
  std::memcpy(bound.data(), &storage, std::min<std::size_t>(length, bound.capacity()));
  bound.resize(length);
  if (impl.options.port != 0 && bound.port() != impl.options.port)
    throw Error(Errc::invalid_config, what + " is bound to " + endpoint_text(bound) +
                                          ", not port " + std::to_string(impl.options.port));
  impl.port = bound.port();
  impl.address = endpoint_text(bound);
  impl.listen_fd = fd;
}

TcpListener::TcpListener(TcpListenerOptions options, OnLink on_link)
    : impl_(std::make_unique<Impl>()) {
  Impl& impl = *impl_;
  impl.log = log_or_stderr(options.link.log);
  impl.options = std::move(options);
  impl.options.link.log = impl.log;
  impl.on_link = std::move(on_link);
  const std::string where = impl.options.address + ":" + std::to_string(impl.options.port);
  if (impl.options.secret.empty())
    throw Error(Errc::invalid_config, "tcp listener on " + where + ": no shared secret");

  if (impl.options.listening_fd >= 0) {
    adopt_listening_socket(impl, where);
  } else {
    bind_and_listen(impl, where);
  }
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
