// Authentication of a data-plane connection: an HMAC-SHA256 challenge-response over a shared
// secret. Both sides send a fresh 32-byte nonce and who they claim to be (rank, world size); each
// proves knowledge of the secret with HMAC(secret, "rankmesh-auth-v1" | role | both nonces | both
// identities), compared in constant time. The secret never crosses the wire.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "deadline.hpp"

namespace rankmesh {

struct PeerIdentity {
  std::int32_t rank = -1;
  std::int32_t world_size = 0;
  bool operator==(const PeerIdentity&) const = default;
};

// Which end of the connection this side is; the two prove different messages.
enum class AuthRole : std::uint8_t { client = 1, server = 2 };

// The shared secret: RANKMESH_SECRET, else the contents of the file named by
// RANKMESH_SECRET_FILE (trailing newline trimmed), else none. Throws Error(invalid_config) when
// the file cannot be read, holds nothing, or is open to group or others (naming its mode).
std::optional<std::string> load_secret();

// A fresh secret of 32 random bytes as 64 hex digits, for ranks that share a process (an
// embedded runtime's tcp links). Throws Error(invalid_argument) when there is no randomness.
std::string random_secret();

// Runs the handshake on the connected socket `fd` (made non-blocking) and returns the peer's
// authenticated identity. Throws Error naming the peer: mismatch for a wrong secret ("peer
// 127.0.0.1:5555 failed authentication (wrong secret?)") or a different world size, malformed for
// bytes that are not a rankmesh handshake, timeout at the deadline, peer_failed when the
// connection breaks; invalid_argument for an empty secret.
// Server only: `admit`, when given, is asked once the client has proven the secret and before
// this side accepts it; false ends the handshake unanswered with Error(peer_failed), which the
// client sees as a dropped connection.
PeerIdentity authenticate(int fd, AuthRole role, std::string_view secret, PeerIdentity self,
                          Deadline deadline, const std::function<bool()>& admit = {});

}  // namespace rankmesh
