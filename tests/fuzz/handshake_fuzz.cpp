// The data plane's authentication handshake (transports/auth.cpp), as an outsider drives it: the
// real authenticate() runs on one end of a socket pair, the fuzzer's bytes are everything the
// other end sends, followed by the end of the stream. The first byte picks the role the fuzzer
// plays (a client, or a server answering one). Nobody without the secret can be accepted, so
// every input must end in an Error naming what was wrong — mismatch, malformed, or peer_failed
// at the end of the bytes — never in success, a crash or a wait until the deadline.
//
// A third kind of input runs two honest sides with the identities (rank, world size) and
// secrets it gives: each side succeeds exactly when the secrets agree and the other side's
// identity fits its world.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <thread>

#include "auth.hpp"
#include "rankmesh/error.hpp"

using namespace rankmesh;

namespace {

constexpr std::string_view kSecret = "fuzz-secret";

// Long enough never to be reached: every read ends at the data or at the end of the stream.
Deadline generous_deadline() { return deadline_after(std::chrono::seconds(10)); }

struct SocketPair {
  int ends[2] = {-1, -1};
  SocketPair() {
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, ends) != 0) std::abort();
  }
  ~SocketPair() {
    for (int fd : ends)
      if (fd >= 0) ::close(fd);
  }
};

// authenticate() against the fuzzer's bytes, which the peer end sends before shutting down.
void against_bytes(AuthRole role, std::span<const std::uint8_t> bytes) {
  SocketPair pair;
  // The pair's buffer holds far more than -max_len; whatever a full buffer refused would only
  // have been read after the handshake had already failed.
  if (!bytes.empty() && ::send(pair.ends[1], bytes.data(), bytes.size(), MSG_DONTWAIT) < 0) std::abort();
  ::shutdown(pair.ends[1], SHUT_WR);
  try {
    authenticate(pair.ends[0], role, kSecret, PeerIdentity{0, 2}, generous_deadline());
  } catch (const Error& error) {
    const Errc code = error.code();
    if (code != Errc::mismatch && code != Errc::malformed && code != Errc::peer_failed) std::abort();
    if (std::strlen(error.what()) == 0) std::abort();
    return;
  }
  std::abort();  // accepted without the secret
}

std::int32_t small(std::uint8_t byte) { return static_cast<std::int32_t>(byte % 6) - 1; }  // -1 .. 4

void honest_pair(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < 5) return;
  const PeerIdentity client{small(bytes[0]), small(bytes[1])}, server{small(bytes[2]), small(bytes[3])};
  const std::string client_secret(kSecret), server_secret = bytes[4] % 2 ? "other" : std::string(kSecret);
  SocketPair pair;
  bool client_ok = false, server_ok = false;
  std::thread server_side([&] {
    try {
      server_ok = authenticate(pair.ends[1], AuthRole::server, server_secret, server, generous_deadline()) == client;
    } catch (const Error&) {
    }
    ::shutdown(pair.ends[1], SHUT_RDWR);  // a client still waiting learns it at once
  });
  try {
    client_ok = authenticate(pair.ends[0], AuthRole::client, client_secret, client, generous_deadline()) == server;
  } catch (const Error&) {
  }
  server_side.join();
  const bool same_secret = client_secret == server_secret;
  const bool server_accepts = same_secret && client.world_size == server.world_size && client.rank >= 0 &&
                              client.rank < server.world_size;
  const bool client_accepts = server_accepts && server.rank >= 0 && server.rank < client.world_size;
  if (server_ok != server_accepts || client_ok != client_accepts) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::span<const std::uint8_t> rest(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0: against_bytes(AuthRole::server, rest); break;  // the fuzzer is a client
    case 1: against_bytes(AuthRole::client, rest); break;  // the fuzzer is a server
    default: honest_pair(rest);
  }
  return 0;
}
