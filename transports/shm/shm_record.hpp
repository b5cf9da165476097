// The record the shm channel (shm_channel.hpp) writes into its ring for each frame, and the
// parser its receiver reads them with. CAF-free and in a file of its own, so that the fuzz build
// compiles it with lib/ alone (tests/fuzz/shm_record_fuzz.cpp).
//
// A record: header | one descriptor per tensor | metadata | body. All integers native-endian
// (both ends run on one node).
//   header (48 B): magic u32 'RMSF' | tensors u32 | link seq u64 | group u32 | op u32 |
//                  op seq u64 | src i32 | metadata bytes u32 | body bytes u64
//   descriptor (72 B): dtype u8 | device type u8 | rank u8 | by reference u8 | 0 u32 | 8 x dim i64
//   body: each payload in tensor order, inline (its bytes) or by reference (address u64 |
//         length u64, 16 B) into the sender's memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "frame.hpp"

namespace rankmesh::shm_record {

inline constexpr std::uint32_t kMagic = 0x46534d52;  // "RMSF"
inline constexpr std::size_t kHeaderBytes = 48;
inline constexpr std::size_t kDescriptorBytes = 72;
inline constexpr std::size_t kReferenceBytes = 16;

// What the receiver accepts: beyond any bound a record is malformed.
struct Limits {
  std::size_t max_tensors = 0;
  std::size_t max_metadata_bytes = 0;
  std::uint64_t max_payload_bytes = 0;
  std::uint64_t max_prefix_bytes = 0;  // header, descriptors and metadata together: the ring
};

struct Header {
  std::uint32_t tensors = 0;
  std::uint64_t link_seq = 0;
  FrameHeader frame;
  std::uint32_t metadata_bytes = 0;
  std::uint64_t body_bytes = 0;
  // Header, descriptors and metadata: where the body starts.
  std::uint64_t prefix_bytes() const noexcept {
    return kHeaderBytes + std::uint64_t{tensors} * kDescriptorBytes + metadata_bytes;
  }
};

// One tensor as its descriptor describes it.
struct Described {
  Shape shape;
  DType dtype = DType::u8;
  bool by_reference = false;
  std::uint64_t nbytes = 0;
};

// Parses the header at `bytes` (kHeaderBytes of them) into `header`. Returns what is wrong —
// another magic, a link sequence other than `expected_seq`, a count or size beyond `limits` —
// or an empty string.
std::string parse_header(const std::uint8_t* bytes, std::uint64_t expected_seq,
                         const Limits& limits, Header& header);
// Parses the header's descriptors at `bytes` (header.tensors * kDescriptorBytes of them) into
// `described` (replaced). Returns what is wrong — an unknown dtype, a device tensor, an
// impossible shape, payloads beyond `limits`, a body other than the descriptors describe — or
// an empty string.
std::string parse_descriptors(const std::uint8_t* bytes, const Header& header,
                              const Limits& limits, std::vector<Described>& described);

// The sender's side: writes the header, and one descriptor, at `out`.
void write_header(std::uint8_t* out, const Header& header) noexcept;
void write_descriptor(std::uint8_t* out, const Tensor& tensor, bool by_reference) noexcept;

// A payload lent by reference (the receiver reads it from the sender's memory): its address in
// the sender and its length, 16 bytes.
struct Reference {
  std::uint64_t address = 0;
  std::uint64_t length = 0;
};
void write_reference(std::uint8_t* out, const Reference& reference) noexcept;
Reference read_reference(const std::uint8_t* in) noexcept;

}  // namespace rankmesh::shm_record
