// Deadline-bounded I/O on connected stream sockets, shared by the handshake (auth) and the tcp
// transport. Sockets are non-blocking; every wait is a poll() that ends at a deadline.
#pragma once

#include <cstddef>
#include <string>

#include "deadline.hpp"

namespace rankmesh::net {

// "127.0.0.1:5555", "[::1]:5555"; "an unknown peer" when the socket has none.
std::string peer_address(int fd);

void set_nonblocking(int fd);
void set_nodelay(int fd);

// Waits until `fd` reports `events` (POLLIN, POLLOUT) or an error or hang-up: true. False when
// the deadline passes first.
bool wait_until(int fd, short events, Deadline deadline);

// Reads exactly `size` bytes. Throws Error(timeout) at the deadline and Error(peer_failed) when
// the peer closes the connection or the socket fails; `what` says what was being read
// ("the handshake of 10.0.0.2:5555").
void read_exact(int fd, void* data, std::size_t size, Deadline deadline, const std::string& what);
// Writes all `size` bytes, with the same errors.
void write_all(int fd, const void* data, std::size_t size, Deadline deadline,
               const std::string& what);

}  // namespace rankmesh::net
