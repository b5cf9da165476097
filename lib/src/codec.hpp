// The metadata codec: Metadata and plain values <-> msgpack bytes.
// Decoding treats its input as hostile: it never crashes, never allocates beyond what the
// input and the limits allow, never loops; anything else is an Error value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
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
// What encode(split(dict).metadata, out) writes (no tensor sliced), straight from the dict:
// the per-message send path copies no key, value or tensor. Appends pointers to the dict's
// tensors to `tensors` in metadata order (valid while `dict` is unchanged). Throws
// Error(invalid_argument) naming the key path where split() would.
void encode(const TensorDict& dict, std::vector<std::uint8_t>& out,
            std::vector<const Tensor*>& tensors);
Result<Metadata> decode_metadata(std::span<const std::uint8_t> bytes,
                                 const FrameLimits& limits = {});

// The dict whose metadata is `bytes` and whose payloads are `payloads`, built straight from the
// bytes, as join(decode_metadata(bytes), tensors) would build it — for a receiver with no per-key
// rules. Tensors without elements are made by `empty`. Nullopt for anything but a plain, valid
// frame (a slice, payloads that do not fit, a duplicate key, bytes that do not decode): the
// caller then takes that full path, which says what is wrong.
std::optional<TensorDict> decode_plain_dict(std::span<const std::uint8_t> bytes,
                                            std::span<const Tensor> payloads, const Allocator& empty,
                                            const FrameLimits& limits = {});

// Objects: any plain value (None, bool, int, float, string, bytes, list of these).
void encode(const Value& object, std::vector<std::uint8_t>& out);
Result<Value> decode_object(std::span<const std::uint8_t> bytes, const FrameLimits& limits = {});

}  // namespace rankmesh
