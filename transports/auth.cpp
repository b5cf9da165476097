#include "auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "rankmesh/error.hpp"
#include "tcp/socket_io.hpp"

namespace rankmesh {
namespace {

constexpr std::uint32_t kAuthMagic = 0x55414d52;  // the bytes 'R' 'M' 'A' 'U'
constexpr std::uint16_t kAuthVersion = 1;
constexpr char kLabel[] = "rankmesh-auth-v1";
constexpr std::size_t kNonceBytes = 32;
constexpr std::size_t kProofBytes = 32;
constexpr std::size_t kHelloBytes = 4 + 2 + 1 + 1 + kNonceBytes + 4 + 4;

// The server's verdict on the client's proof, sent before its own proof.
enum Verdict : std::uint8_t { accepted = 0, wrong_proof = 1, wrong_identity = 2 };

using Nonce = std::array<std::uint8_t, kNonceBytes>;
using Proof = std::array<std::uint8_t, kProofBytes>;

struct Hello {
  AuthRole role;
  Nonce nonce;
  PeerIdentity identity;
};

void put32(std::uint8_t*& out, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) *out++ = static_cast<std::uint8_t>(value >> (8 * i));
}
std::uint32_t get32(const std::uint8_t*& in) {
  std::uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value |= static_cast<std::uint32_t>(*in++) << (8 * i);
  return value;
}

std::array<std::uint8_t, kHelloBytes> encode(const Hello& hello) {
  std::array<std::uint8_t, kHelloBytes> bytes{};
  std::uint8_t* out = bytes.data();
  put32(out, kAuthMagic);
  *out++ = static_cast<std::uint8_t>(kAuthVersion);
  *out++ = static_cast<std::uint8_t>(kAuthVersion >> 8);
  *out++ = static_cast<std::uint8_t>(hello.role);
  *out++ = 0;
  std::memcpy(out, hello.nonce.data(), kNonceBytes);
  out += kNonceBytes;
  put32(out, static_cast<std::uint32_t>(hello.identity.rank));
  put32(out, static_cast<std::uint32_t>(hello.identity.world_size));
  return bytes;
}

Hello decode(const std::array<std::uint8_t, kHelloBytes>& bytes, AuthRole expected,
             const std::string& peer) {
  const std::uint8_t* in = bytes.data();
  const std::uint32_t magic = get32(in);
  const auto version = static_cast<std::uint16_t>(in[0] | (in[1] << 8));
  in += 2;
  const std::uint8_t role = *in++;
  ++in;  // reserved
  if (magic != kAuthMagic)
    throw Error(Errc::malformed, "peer " + peer + " is not a rankmesh rank (no handshake)");
  if (version != kAuthVersion)
    throw Error(Errc::malformed, "peer " + peer + " speaks handshake version " +
                                     std::to_string(version) + "; this build speaks " +
                                     std::to_string(kAuthVersion));
  if (role != static_cast<std::uint8_t>(expected))
    throw Error(Errc::malformed, "peer " + peer + " sent a handshake for the wrong role");
  Hello hello{expected, {}, {}};
  std::memcpy(hello.nonce.data(), in, kNonceBytes);
  in += kNonceBytes;
  hello.identity.rank = static_cast<std::int32_t>(get32(in));
  hello.identity.world_size = static_cast<std::int32_t>(get32(in));
  return hello;
}

// HMAC(secret, label | prover's role | client nonce | server nonce | client id | server id).
Proof prove(std::string_view secret, AuthRole prover, const Hello& client, const Hello& server) {
  std::array<std::uint8_t, sizeof(kLabel) - 1 + 1 + 2 * kNonceBytes + 16> message{};
  std::uint8_t* out = message.data();
  std::memcpy(out, kLabel, sizeof(kLabel) - 1);
  out += sizeof(kLabel) - 1;
  *out++ = static_cast<std::uint8_t>(prover);
  std::memcpy(out, client.nonce.data(), kNonceBytes);
  out += kNonceBytes;
  std::memcpy(out, server.nonce.data(), kNonceBytes);
  out += kNonceBytes;
  for (const Hello* hello : {&client, &server}) {
    put32(out, static_cast<std::uint32_t>(hello->identity.rank));
    put32(out, static_cast<std::uint32_t>(hello->identity.world_size));
  }
  Proof proof{};
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), message.data(),
           message.size(), proof.data(), &length) == nullptr ||
      length != kProofBytes)
    throw Error(Errc::invalid_argument, "HMAC-SHA256 failed in libcrypto");
  return proof;
}

bool same(const Proof& a, const Proof& b) { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

std::string identity_problem(const PeerIdentity& self, const PeerIdentity& peer) {
  if (peer.world_size != self.world_size)
    return "claims world size " + std::to_string(peer.world_size) + ", this rank has " +
           std::to_string(self.world_size);
  if (peer.rank < 0 || peer.rank >= self.world_size)
    return "claims rank " + std::to_string(peer.rank) + ", outside a world of " +
           std::to_string(self.world_size);
  return {};
}

std::string trim_newline(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

}  // namespace

std::optional<std::string> load_secret() {
  if (const char* secret = std::getenv("RANKMESH_SECRET"); secret != nullptr && *secret != 0)
    return std::string(secret);
  const char* file = std::getenv("RANKMESH_SECRET_FILE");
  if (file == nullptr || *file == 0) return std::nullopt;
  // Like ssh with a private key: a secret others can read is no secret.
  struct stat info {};
  if (::stat(file, &info) == 0 && (info.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info.st_mode & 07777));
    throw Error(Errc::invalid_config, std::string("RANKMESH_SECRET_FILE=") + file + " has mode " +
                                          mode + ": group or others may read it; chmod 600 it");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw Error(Errc::invalid_config, std::string("RANKMESH_SECRET_FILE=") + file +
                                          ": cannot read it: " + std::strerror(errno));
  std::ostringstream contents;
  contents << in.rdbuf();
  std::string secret = trim_newline(contents.str());
  if (secret.empty())
    throw Error(Errc::invalid_config,
                std::string("RANKMESH_SECRET_FILE=") + file + " holds an empty secret");
  return secret;
}

std::string random_secret() {
  Nonce bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1)
    throw Error(Errc::invalid_argument, "RAND_bytes failed: no randomness for a secret");
  static const char digits[] = "0123456789abcdef";
  std::string secret;
  for (std::uint8_t byte : bytes) {
    secret += digits[byte >> 4];
    secret += digits[byte & 15];
  }
  return secret;
}

PeerIdentity authenticate(int fd, AuthRole role, std::string_view secret, PeerIdentity self,
                          Deadline deadline, const std::function<bool()>& admit) {
  if (secret.empty())
    throw Error(Errc::invalid_argument, "authenticate: the shared secret is empty");
  net::set_nonblocking(fd);
  const std::string peer = net::peer_address(fd);
  const std::string during = "authenticating peer " + peer;
  const AuthRole other = role == AuthRole::client ? AuthRole::server : AuthRole::client;

  Hello mine{role, {}, self};
  if (RAND_bytes(mine.nonce.data(), static_cast<int>(kNonceBytes)) != 1)
    throw Error(Errc::invalid_argument, "RAND_bytes failed: no randomness for a handshake nonce");
  auto read_hello = [&] {
    std::array<std::uint8_t, kHelloBytes> bytes{};
    net::read_exact(fd, bytes.data(), bytes.size(), deadline, during);
    return decode(bytes, other, peer);
  };
  const auto hello = encode(mine);
  const std::string wrong_secret = "peer " + peer + " failed authentication (wrong secret?)";

  if (role == AuthRole::client) {
    net::write_all(fd, hello.data(), hello.size(), deadline, during);
    const Hello theirs = read_hello();
    const Proof proof = prove(secret, AuthRole::client, mine, theirs);
    net::write_all(fd, proof.data(), proof.size(), deadline, during);
    std::uint8_t verdict = 0;
    net::read_exact(fd, &verdict, 1, deadline, during);
    if (verdict == wrong_proof)
      throw Error(Errc::mismatch, "peer " + peer + " refused our authentication (wrong secret?)");
    if (verdict == wrong_identity)
      throw Error(Errc::mismatch, "peer " + peer + " refused our identity (rank " +
                                      std::to_string(self.rank) + " of a world of " +
                                      std::to_string(self.world_size) + ")");
    if (verdict != accepted)
      throw Error(Errc::malformed, "peer " + peer + " sent an unknown handshake verdict");
    Proof received{};
    net::read_exact(fd, received.data(), received.size(), deadline, during);
    if (!same(received, prove(secret, AuthRole::server, mine, theirs)))
      throw Error(Errc::mismatch, wrong_secret);
    if (std::string problem = identity_problem(self, theirs.identity); !problem.empty())
      throw Error(Errc::mismatch, "peer " + peer + " " + problem);
    return theirs.identity;
  }

  const Hello theirs = read_hello();
  net::write_all(fd, hello.data(), hello.size(), deadline, during);
  Proof received{};
  net::read_exact(fd, received.data(), received.size(), deadline, during);
  auto refuse = [&](Verdict verdict, const std::string& why) {
    try {
      net::write_all(fd, &verdict, 1, deadline, during);
    } catch (const Error&) {
      // The verdict is a courtesy; the refusal stands either way.
    }
    throw Error(Errc::mismatch, why);
  };
  if (!same(received, prove(secret, AuthRole::client, theirs, mine)))
    refuse(wrong_proof, wrong_secret);
  if (std::string problem = identity_problem(self, theirs.identity); !problem.empty())
    refuse(wrong_identity, "peer " + peer + " " + problem);
  if (admit && !admit())
    throw Error(Errc::peer_failed, "peer " + peer + " proved the secret but was not admitted");
  std::array<std::uint8_t, 1 + kProofBytes> answer{};
  answer[0] = accepted;
  const Proof proof = prove(secret, AuthRole::server, theirs, mine);
  std::memcpy(answer.data() + 1, proof.data(), kProofBytes);
  net::write_all(fd, answer.data(), answer.size(), deadline, during);
  return theirs.identity;
}

}  // namespace rankmesh
