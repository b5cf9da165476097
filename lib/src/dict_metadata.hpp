// A dict's split into metadata (what the codec carries: keys, plain values, tensor descriptions)
// plus its list of tensors (what transports move), and the join back. Internal: engines see
// only TensorDict.
#pragma once

#include <string>
#include <vector>

#include "rankmesh/tensor_dict.hpp"

namespace rankmesh {

// What the receiver needs to know about a tensor before its bytes arrive.
struct TensorMeta {
  DeviceType device_type = DeviceType::cpu;
  DType dtype = DType::f32;
  Shape shape;
  // Travels as this rank's slice of an all-gather group (send-allgather).
  bool sliced = false;
  bool operator==(const TensorMeta&) const = default;
};

// One key of the metadata, addressed by its path from the top-level dict.
struct MetaEntry {
  enum class Kind : std::uint8_t { value, tensor, empty_dict };
  std::vector<std::string> path;
  Kind kind = Kind::value;
  Value value;        // kind == value: a plain value (no tensor, no dict inside)
  TensorMeta tensor;  // kind == tensor
  bool operator==(const MetaEntry&) const = default;
};

// The keys of a dict in order (nested dicts flattened depth first), tensors described.
struct Metadata {
  std::vector<MetaEntry> entries;
  std::size_t tensor_count() const noexcept;
  bool operator==(const Metadata&) const = default;
};

struct SplitDict {
  Metadata metadata;
  std::vector<Tensor> tensors;  // in the order of the tensor entries of `metadata`
};

// A value the codec carries as it is: no tensor or dict in it (lists of plain values are plain).
bool is_plain(const Value& value);

// A key path as an error message shows it: 'outer.inner'.
std::string format_key_path(const std::vector<std::string>& path);

// Splits a dict. Throws Error(invalid_argument) naming the key path for what the codec cannot
// carry (an undefined tensor, a tensor or dict inside a list).
SplitDict split(const TensorDict& dict);

// Joins metadata and tensors back into a dict equal to the one split. Throws
// Error(invalid_argument) when the tensors do not match the metadata (count, shape, dtype)
// or the metadata is inconsistent (duplicate key, a path through a non-dict).
TensorDict join(Metadata metadata, std::vector<Tensor> tensors);

}  // namespace rankmesh
