#include "tcp/socket_io.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "rankmesh/error.hpp"

namespace rankmesh::net {

std::string peer_address(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0)
    return "an unknown peer";
  char host[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&address);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (address.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&address);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "a peer of address family " + std::to_string(address.ss_family);
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    throw Error(Errc::invalid_argument,
                std::string("cannot make a socket non-blocking: ") + std::strerror(errno));
}

void set_nodelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // fails only for non-tcp
}

bool wait_until(int fd, short events, Deadline deadline) {
  pollfd entry{fd, events, 0};
  while (true) {
    const auto left = std::max(Clock::duration::zero(), deadline - Clock::now());
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec timeout{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    const int ready = ::ppoll(&entry, 1, &timeout, nullptr);
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR)
      throw Error(Errc::peer_failed, std::string("poll failed: ") + std::strerror(errno));
    if (ready == 0 && Clock::now() >= deadline) return false;
  }
}

void read_exact(int fd, void* data, std::size_t size, Deadline deadline, const std::string& what) {
  auto* out = static_cast<char*>(data);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::recv(fd, out + done, size - done, 0);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
    } else if (n == 0) {
      throw Error(Errc::peer_failed, what + ": the peer closed the connection");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_until(fd, POLLIN, deadline))
        throw Error(Errc::timeout, what + ": no answer before the deadline");
    } else if (errno != EINTR) {
      throw Error(Errc::peer_failed, what + ": " + std::strerror(errno));
    }
  }
}

void write_all(int fd, const void* data, std::size_t size, Deadline deadline,
               const std::string& what) {
  const auto* in = static_cast<const char*>(data);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::send(fd, in + done, size - done, MSG_NOSIGNAL);
    if (n >= 0) {
      done += static_cast<std::size_t>(n);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_until(fd, POLLOUT, deadline))
        throw Error(Errc::timeout, what + ": the peer took nothing before the deadline");
    } else if (errno != EINTR) {
      throw Error(Errc::peer_failed, what + ": " + std::strerror(errno));
    }
  }
}

}  // namespace rankmesh::net
