// DictSchema: what stays the same from one tensor dict to the next in a stream such as a pipeline
// stage's — keys, nesting, which keys hold tensors (with their device, dtype and number of
// dimensions) and which hold plain values. An instance is what changes: the tensors' dimensions
// and the plain values. The schema cache (schema_cache.hpp) sends a schema once per (group, peer)
// and instances after it; this file knows how a dict and a schema relate, not the frames.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "dict_metadata.hpp"
#include "metadata_coder.hpp"

namespace rankmesh {

class DictSchema {
public:
  // The schema of a dict that encode(dict) has accepted.
  static DictSchema of(const TensorDict& dict);
  // The schema of received metadata. Nullopt where the metadata cannot have come from
  // encode(dict): a sliced tensor, a duplicate key, a path through a value, entries not in the
  // depth-first order of the dict they build.
  static std::optional<DictSchema> of(const Metadata& metadata);

  // Sender: when `dict` has this schema, appends its instance to `encoder` and its tensors to
  // `tensors` and returns true. False otherwise, and what was appended is to be dropped.
  // `matched`: the sender's memory of this schema, the structure number (TensorDict) of each
  // nested dict level whose keys were found equal to the schema's before, by level in walking
  // order: a level of the same number is not compared key by key again.
  bool write_instance(const TensorDict& dict, detail::Encoder& encoder,
                      std::vector<const Tensor*>& tensors,
                      std::vector<std::uint64_t>& matched) const;

  // Receiver: the dict of the instance at `decoder`, its tensors `payloads` in order (tensors
  // without elements made by `empty`). Nullopt when the payloads do not fit it (count, dtype,
  // shape): read_metadata() and the full path then name what is wrong. Throws Error for bytes
  // that do not decode.
  std::optional<TensorDict> read_instance(detail::Decoder& decoder,
                                          std::span<const Tensor> payloads,
                                          const Allocator& empty) const;
  // Receiver: the metadata of the instance at `decoder` (what decode_metadata() gives for a
  // plain frame). Throws Error for bytes that do not decode.
  Metadata read_metadata(detail::Decoder& decoder) const;

  std::size_t leaves() const noexcept { return leaves_.size(); }

private:
  // A key that holds no non-empty dict, in the dict's depth-first order.
  struct Leaf {
    MetaEntry::Kind kind = MetaEntry::Kind::value;
    DeviceType device = DeviceType::cpu;
    DType dtype = DType::f32;
    std::uint8_t rank = 0;  // dimensions of a tensor
  };

  bool write_level(const TensorDict& dict, const TensorDict& prototype, std::size_t& leaf,
                   std::size_t& level, detail::Encoder& encoder,
                   std::vector<const Tensor*>& tensors, std::vector<std::uint64_t>& matched) const;
  bool read_level(TensorDict& level, std::size_t depth, std::size_t& leaf,
                  detail::Decoder& decoder, std::span<const Tensor> payloads, std::size_t& payload,
                  const Allocator& empty) const;

  // Keys and nesting of the dicts of this schema; a leaf holds a placeholder until an instance
  // fills it (a received dict starts as a copy): None, an empty dict, or a plain int or float
  // of the kind the schema was learnt from (placeholder_of in dict_schema.cpp).
  TensorDict prototype_;
  std::vector<Leaf> leaves_;
  // Receiver only: the entries' paths and kinds, for read_metadata().
  Metadata skeleton_;
};

}  // namespace rankmesh
