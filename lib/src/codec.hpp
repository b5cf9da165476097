// The metadata codec: Metadata and plain values <-> msgpack bytes.
// Decoding treats its input as hostile: it never crashes, never allocates beyond what the
// input and the limits allow, never loops; anything else is an Error value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "dict_metadata.hpp"
#include "rankmesh/error.hpp"
#include "result.hpp"

namespace rankmesh {

struct CodecLimits {
  std::size_t max_bytes = 16u << 20;          // size of the encoded metadata
  std::size_t max_depth = 32;                 // nesting of dict paths and lists (bounds recursion)
  std::size_t max_entries = 1u << 20;         // entries, list items and path keys, in total
  int max_rank = Shape::kMaxRank;             // dimensions of one tensor
  std::uint64_t max_payload_bytes = 1ull << 40;  // declared tensor bytes, in total
};

// Encodes into `out`, replacing its contents (its capacity is reused).
void encode(const Metadata& metadata, std::vector<std::uint8_t>& out);
std::vector<std::uint8_t> encode(const Metadata& metadata);
Result<Metadata> decode_metadata(std::span<const std::uint8_t> bytes,
                                 const CodecLimits& limits = {});

// Objects: any plain value (None, bool, int, float, string, bytes, list of these).
void encode(const Value& object, std::vector<std::uint8_t>& out);
Result<Value> decode_object(std::span<const std::uint8_t> bytes, const CodecLimits& limits = {});

}  // namespace rankmesh
