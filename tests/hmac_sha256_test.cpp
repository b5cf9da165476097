// hmac_sha256: SHA-256 against FIPS 180-2's examples, HMAC-SHA256 against RFC 4231's test
// cases, and the padding boundaries (55 and 56 bytes end a block either side of the length).
#include "hmac_sha256.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace rankmesh;

namespace {

std::span<const std::uint8_t> bytes(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

std::string hex(const Sha256Digest& digest) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (std::uint8_t byte : digest) {
    out += digits[byte >> 4];
    out += digits[byte & 15];
  }
  return out;
}

std::string repeated(char c, std::size_t n) { return std::string(n, c); }

}  // namespace

TEST_CASE("sha256: the FIPS 180-2 examples") {
  CHECK(hex(sha256(bytes(""))) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(hex(sha256(bytes("abc"))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(hex(sha256(bytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(hex(sha256(bytes(repeated('a', 1000000)))) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("hmac_sha256: RFC 4231 test cases 1, 2, 3, 4, 6 and 7") {
  CHECK(hex(hmac_sha256(repeated('\x0b', 20), bytes("Hi There"))) ==
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  CHECK(hex(hmac_sha256("Jefe", bytes("what do ya want for nothing?"))) ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(hex(hmac_sha256(repeated('\xaa', 20), bytes(repeated('\xdd', 50)))) ==
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
  std::string counting;
  for (char c = 1; c <= 25; ++c) counting += c;
  CHECK(hex(hmac_sha256(counting, bytes(repeated('\xcd', 50)))) ==
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
  // Keys longer than a block are hashed first.
  CHECK(hex(hmac_sha256(repeated('\xaa', 131), bytes("Test Using Larger Than Block-Size Key - Hash Key First"))) ==
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  CHECK(hex(hmac_sha256(repeated('\xaa', 131),
                        bytes("This is a test using a larger than block-size key and a larger than block-size "
                              "data. The key needs to be hashed before being used by the HMAC algorithm."))) ==
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

TEST_CASE("hmac_sha256: a key of exactly one block, messages either side of the padding boundary") {
  // Values from Python's hmac module.
  CHECK(hex(hmac_sha256(repeated('k', 64), bytes(repeated('x', 55)))) ==
        "1bbe8dbb4ed99e04310a084f96d34cc82e5c09e8365731f60f97ad32eac6855c");
  CHECK(hex(hmac_sha256(repeated('k', 64), bytes(repeated('x', 56)))) ==
        "0da2d334b9ba4c8e18b4abf042c3f3432ed6ac459c18e6a49036b314190d30d8");
}

TEST_CASE("equal_in_constant_time: equal, different anywhere, different sizes") {
  const std::vector<std::uint8_t> a{1, 2, 3, 4};
  std::vector<std::uint8_t> b = a;
  CHECK(equal_in_constant_time(a, b));
  for (std::size_t i = 0; i < b.size(); ++i) {
    b = a;
    b[i] ^= 0x80;
    CHECK_FALSE(equal_in_constant_time(a, b));
  }
  CHECK_FALSE(equal_in_constant_time(a, std::vector<std::uint8_t>{1, 2, 3}));
}
