// The metadata codec: Metadata and plain values <-> msgpack bytes.
// Decoding treats its input as hostile: it never crashes, never allocates beyond what the
// input and the limits allow, never loops; anything else is an Error value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "dict_metadata.hpp"
#include "frame_limits.hpp"
#include "rankmesh/error.hpp"
#include "result.hpp"

namespace rankmesh {

// Encodes into `out`, replacing its contents (its capacity is reused).
void encode(const Metadata& metadata, std::vector<std::uint8_t>& out);
std::vector<std::uint8_t> encode(const Metadata& metadata);
Result<Metadata> decode_metadata(std::span<const std::uint8_t> bytes,
                                 const FrameLimits& limits = {});

// Objects: any plain value (None, bool, int, float, string, bytes, list of these).
void encode(const Value& object, std::vector<std::uint8_t>& out);
Result<Value> decode_object(std::span<const std::uint8_t> bytes, const FrameLimits& limits = {});

}  // namespace rankmesh
