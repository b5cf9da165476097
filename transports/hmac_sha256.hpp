// HMAC-SHA256 (RFC 2104 over FIPS 180-4's SHA-256), for the handshake of auth.hpp. In the tree
// rather than from libcrypto: loading libcrypto and initialising OpenSSL 3 cost every rank
// ~9 ms of CPU at start-up (~120 page faults to relocate it, ~4 ms for its random generator's
// first use), a quarter of a 64-rank world's start-up on two cores, for one 32-byte MAC per
// connection. Checked against the test vectors of FIPS 180-2 and RFC 4231.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace rankmesh {

using Sha256Digest = std::array<std::uint8_t, 32>;

Sha256Digest sha256(std::span<const std::uint8_t> message) noexcept;
Sha256Digest hmac_sha256(std::string_view key, std::span<const std::uint8_t> message) noexcept;

// Whether a and b are equal, in a time that does not depend on where they differ (comparing
// a MAC byte by byte with early exit would tell an attacker how much of a guess was right).
bool equal_in_constant_time(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) noexcept;

}  // namespace rankmesh
