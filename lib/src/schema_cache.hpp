// The schema cache of tensor-dict channels: a pipeline stage sends dicts whose keys, dtypes and
// nesting repeat every step, so the first dict of a schema on a (group, sender, receiver) pair
// defines it and the next ones name it and carry only what changes (DictSchema's instance).
// Between ranks of one process only small dicts that were not donated are encoded (to travel in
// the inproc channel's slot), and those with an empty device tensor; others change hands
// themselves (Frame::dict).
//
// Wire format of a cached frame's metadata (a plain frame's is codec.hpp's format, which begins
// with a msgpack array; 0xc1 is the one byte msgpack never uses, so the two cannot be confused):
//   0xc1 'D' slot definition <plain metadata>   defines `slot` and carries the whole dict
//   0xc1 'U' slot definition <instance>         a dict of the schema that `definition` defined
// slot:       msgpack uint, 0 .. kCachedSchemas-1
// definition: msgpack uint, the sender's count of definitions to this peer (from 1, never
//             reused), so a use names exactly the definition it relies on
// instance:   per leaf of the schema, depth first: a tensor's dimensions (one msgpack int each;
//             their count is in the schema), a plain value (msgpack, as in the plain format),
//             nothing for an empty dict.
//
// Keeping both sides equal: the receiver takes in the definition of every tensor-dict frame it
// takes off the channel from that peer, in channel order, whatever becomes of the frame —
// delivered, discarded because its receive timed out, or refused as out of order — so a
// definition is never lost with a frame. A send that fails may or may not have left, so the
// sender then forgets all its schemas for that peer and defines afresh; a rebuilt group starts
// with empty caches on both sides. A use whose definition the receiver does not hold (or holds
// refused as malformed) is an error naming both, never a dict decoded by another schema.
//
// Bounds: kCachedSchemas schemas per pair and direction (the least recently used is replaced by
// a new definition in its slot), each of at most kMaxCachedLeaves keys; larger dicts travel plain.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dict_schema.hpp"
#include "frame_limits.hpp"
#include "result.hpp"

namespace rankmesh {

inline constexpr std::size_t kCachedSchemas = 8;
inline constexpr std::size_t kMaxCachedLeaves = 1024;

// What the sender knows it has defined at one peer.
class SchemaSender {
public:
  // Writes the metadata of `dict` into `out` and appends pointers to its tensors to `tensors`
  // (as codec.hpp's encode(dict)): a use of a cached schema when the dict has one, a
  // definition otherwise. Throws what encode(dict) throws.
  void encode(const TensorDict& dict, std::vector<std::uint8_t>& out,
              std::vector<const Tensor*>& tensors);
  // After a send that failed: the peer may lack any definition, so each is sent again.
  void forget() noexcept;
  // Definitions sent so far (they number the definitions).
  std::uint64_t definitions() const noexcept { return definitions_; }

private:
  struct Slot {
    std::optional<DictSchema> schema;
    std::uint64_t definition = 0;
    std::uint64_t last_used = 0;
    std::vector<std::uint64_t> matched;  // DictSchema::write_instance's memory of keys matched
  };
  std::array<Slot, kCachedSchemas> slots_;
  std::uint64_t definitions_ = 0;
  std::uint64_t clock_ = 0;
  std::size_t last_used_ = 0;
};

// What the receiver holds from one peer.
class SchemaReceiver {
public:
  static bool is_cached_frame(std::span<const std::uint8_t> metadata) noexcept {
    return !metadata.empty() && metadata[0] == 0xc1;
  }
  // Takes in the definition that `metadata` carries, if any. Called for every tensor-dict frame
  // from the peer, in channel order, whatever becomes of the frame. Never throws: a definition
  // that does not decode is kept as refused, with the reason, for the uses that name it.
  void take_in(std::span<const std::uint8_t> metadata, const FrameLimits& limits = {});
  // The dict of a cached frame (taken in already), as decode_plain_dict() builds a plain one;
  // nullopt where that fails: metadata() then says why.
  std::optional<TensorDict> read_dict(std::span<const std::uint8_t> metadata,
                                      std::span<const Tensor> payloads, const Allocator& empty,
                                      const FrameLimits& limits = {}) const;
  // The metadata of a cached frame (taken in already), or an Error naming what is wrong — a
  // definition this receiver does not hold names both numbers.
  Result<Metadata> metadata(std::span<const std::uint8_t> metadata,
                            const FrameLimits& limits = {}) const;
  // Definitions taken in so far.
  std::uint64_t definitions() const noexcept { return definitions_; }

private:
  struct Slot {
    std::optional<DictSchema> schema;
    std::uint64_t definition = 0;
    std::string refused;  // why a definition was not cached
  };
  // The schema a use names, checked: its slot holds the definition the use relies on.
  const DictSchema& held(std::size_t slot, std::uint64_t definition,
                         const detail::Decoder& decoder) const;
  std::array<Slot, kCachedSchemas> slots_;
  std::uint64_t definitions_ = 0;
};

// A group's schema caches, one per peer and direction, made when a pair first talks.
class SchemaCaches {
public:
  explicit SchemaCaches(std::size_t members) : to_(members), from_(members) {}
  // Inline: asked for on every message; a pair's cache is made on its first.
  SchemaSender& to(int peer) {
    const auto& cache = to_[static_cast<std::size_t>(peer)];
    return cache ? *cache : make_to(peer);
  }
  SchemaReceiver& from(int peer) {
    const auto& cache = from_[static_cast<std::size_t>(peer)];
    return cache ? *cache : make_from(peer);
  }

private:
  [[gnu::noinline]] SchemaSender& make_to(int peer);
  [[gnu::noinline]] SchemaReceiver& make_from(int peer);

  std::vector<std::unique_ptr<SchemaSender>> to_;
  std::vector<std::unique_ptr<SchemaReceiver>> from_;
};

}  // namespace rankmesh
