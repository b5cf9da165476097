#include "hmac_sha256.hpp"

#include <algorithm>
#include <cstring>

namespace rankmesh {
namespace {

constexpr std::array<std::uint32_t, 64> kRound = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr std::size_t kBlock = 64;

constexpr std::uint32_t rotr(std::uint32_t x, int n) noexcept { return (x >> n) | (x << (32 - n)); }

// SHA-256 fed in pieces: HMAC hashes the padded key and the message as one stream.
class Sha256 {
public:
  void update(std::span<const std::uint8_t> data) noexcept {
    length_ += data.size();
    while (!data.empty()) {
      const std::size_t take = std::min(kBlock - filled_, data.size());
      std::memcpy(block_.data() + filled_, data.data(), take);
      filled_ += take;
      data = data.subspan(take);
      if (filled_ == kBlock) {
        compress();
        filled_ = 0;
      }
    }
  }

  Sha256Digest finish() noexcept {
    const std::uint64_t bits = length_ * 8;
    const std::uint8_t one = 0x80;
    update({&one, 1});
    const std::uint8_t zero = 0;
    while (filled_ != kBlock - 8) update({&zero, 1});
    std::array<std::uint8_t, 8> size{};
    for (int i = 0; i < 8; ++i) size[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(bits >> (56 - 8 * i));
    update(size);
    Sha256Digest digest{};
    for (std::size_t i = 0; i < 8; ++i)
      for (std::size_t b = 0; b < 4; ++b)
        digest[4 * i + b] = static_cast<std::uint8_t>(state_[i] >> (24 - 8 * b));
    return digest;
  }

private:
  void compress() noexcept {
    std::array<std::uint32_t, 64> w{};
    for (std::size_t i = 0; i < 16; ++i)
      w[i] = static_cast<std::uint32_t>(block_[4 * i]) << 24 | static_cast<std::uint32_t>(block_[4 * i + 1]) << 16 |
             static_cast<std::uint32_t>(block_[4 * i + 2]) << 8 | static_cast<std::uint32_t>(block_[4 * i + 3]);
    for (std::size_t i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
    std::uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
    for (std::size_t i = 0; i < 64; ++i) {
      const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kRound[i] + w[i];
      const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state_[0] += a;
    state_[1] += b;
    state_[2] += c;
    state_[3] += d;
    state_[4] += e;
    state_[5] += f;
    state_[6] += g;
    state_[7] += h;
  }

  std::array<std::uint32_t, 8> state_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<std::uint8_t, kBlock> block_{};
  std::size_t filled_ = 0;
  std::uint64_t length_ = 0;
};

}  // namespace

Sha256Digest sha256(std::span<const std::uint8_t> message) noexcept {
  Sha256 hash;
  hash.update(message);
  return hash.finish();
}

Sha256Digest hmac_sha256(std::string_view key, std::span<const std::uint8_t> message) noexcept {
  // A key longer than a block is hashed first; a shorter one is padded with zeros.
  std::array<std::uint8_t, kBlock> padded{};
  const auto* key_bytes = reinterpret_cast<const std::uint8_t*>(key.data());
  if (key.size() > kBlock) {
    const Sha256Digest hashed = sha256({key_bytes, key.size()});
    std::copy(hashed.begin(), hashed.end(), padded.begin());
  } else {
    std::copy(key_bytes, key_bytes + key.size(), padded.begin());
  }
  std::array<std::uint8_t, kBlock> inner_pad{}, outer_pad{};
  for (std::size_t i = 0; i < kBlock; ++i) {
    inner_pad[i] = static_cast<std::uint8_t>(padded[i] ^ 0x36);
    outer_pad[i] = static_cast<std::uint8_t>(padded[i] ^ 0x5c);
  }
  Sha256 inner;
  inner.update(inner_pad);
  inner.update(message);
  const Sha256Digest inner_digest = inner.finish();
  Sha256 outer;
  outer.update(outer_pad);
  outer.update(inner_digest);
  return outer.finish();
}

bool equal_in_constant_time(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) noexcept {
  if (a.size() != b.size()) return false;  // the sizes are public (a MAC has one)
  std::uint8_t difference = 0;
  for (std::size_t i = 0; i < a.size(); ++i) difference = static_cast<std::uint8_t>(difference | (a[i] ^ b[i]));
  // Read through a volatile so that the compiler cannot turn the loop back into an early exit.
  volatile std::uint8_t result = difference;
  return result == 0;
}

}  // namespace rankmesh
