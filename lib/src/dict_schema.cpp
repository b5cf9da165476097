#include "dict_schema.hpp"

#include <string>

namespace rankmesh {
namespace {

using detail::Decoder;
using detail::Encoder;
using detail::Where;

const TensorDict* non_empty_dict(const Value& value) noexcept {
  const auto* dict = std::get_if<TensorDict>(&value.v);
  return dict != nullptr && !dict->empty() ? dict : nullptr;
}

// The leaves' key paths of `dict`, depth first: the order encode(dict) writes its entries in.
void leaf_paths(const TensorDict& dict, std::vector<std::string>& path,
                std::vector<std::vector<std::string>>& out) {
  for (const auto& [key, value] : dict) {
    path.push_back(key);
    if (const TensorDict* nested = non_empty_dict(value)) {
      leaf_paths(*nested, path, out);
    } else {
      out.push_back(path);
    }
    path.pop_back();
  }
}

// A value leaf's placeholder in a prototype: a plain int or float keeps its kind (not its
// value), so that an instance's scalar of the same kind is assigned in place (read_value_into).
Value placeholder_of(const Value& value) {
  if (value.is<std::int64_t>()) return Value(std::int64_t{0});
  if (value.is<double>()) return Value(0.0);
  return Value(None{});
}

}  // namespace

DictSchema DictSchema::of(const TensorDict& dict) {
  DictSchema schema;
  schema.prototype_.reserve(dict.size());
  for (const auto& [key, value] : dict) {
    if (const TensorDict* nested = non_empty_dict(value)) {
      DictSchema inner = of(*nested);
      schema.leaves_.insert(schema.leaves_.end(), inner.leaves_.begin(), inner.leaves_.end());
      schema.prototype_.set(key, std::move(inner.prototype_));
      continue;
    }
    Leaf leaf;
    if (const auto* tensor = std::get_if<Tensor>(&value.v)) {
      leaf = Leaf{MetaEntry::Kind::tensor, tensor->device().type, tensor->dtype(),
                  static_cast<std::uint8_t>(tensor->shape().rank())};
      schema.prototype_.set(key, None{});
    } else if (value.is<TensorDict>()) {
      leaf.kind = MetaEntry::Kind::empty_dict;
      schema.prototype_.set(key, TensorDict{});
    } else {
      schema.prototype_.set(key, placeholder_of(value));
    }
    schema.leaves_.push_back(leaf);
  }
  return schema;
}

std::optional<DictSchema> DictSchema::of(const Metadata& metadata) {
  DictSchema schema;
  for (const MetaEntry& entry : metadata.entries) {
    if (entry.path.empty() || (entry.kind == MetaEntry::Kind::tensor && entry.tensor.sliced))
      return std::nullopt;
    TensorDict* parent = &schema.prototype_;
    for (std::size_t level = 0; level + 1 < entry.path.size(); ++level) {
      Value* step = parent->find(entry.path[level]);
      if (step == nullptr) {
        parent->set(entry.path[level], TensorDict{});
        step = parent->find(entry.path[level]);
      }
      if (!step->is<TensorDict>()) return std::nullopt;
      parent = &step->as<TensorDict>();
    }
    Value placeholder = entry.kind == MetaEntry::Kind::empty_dict ? Value(TensorDict{})
                        : entry.kind == MetaEntry::Kind::value    ? placeholder_of(entry.value)
                                                                  : Value(None{});
    if (!parent->try_emplace(std::string(entry.path.back()), std::move(placeholder)))
      return std::nullopt;
    schema.leaves_.push_back(Leaf{entry.kind, entry.tensor.device_type, entry.tensor.dtype,
                                  static_cast<std::uint8_t>(entry.tensor.shape.rank())});
  }
  // The prototype's leaves must come in the entries' order, or an instance would fill them
  // in another order than the sender wrote it (and an empty dict must still be empty).
  std::vector<std::string> path;
  std::vector<std::vector<std::string>> order;
  leaf_paths(schema.prototype_, path, order);
  if (order.size() != metadata.entries.size()) return std::nullopt;
  for (std::size_t i = 0; i < order.size(); ++i)
    if (order[i] != metadata.entries[i].path) return std::nullopt;
  schema.skeleton_ = metadata;
  return schema;
}

bool DictSchema::write_instance(const TensorDict& dict, Encoder& encoder,
                                std::vector<const Tensor*>& tensors,
                                std::vector<std::uint64_t>& matched) const {
  std::size_t leaf = 0;
  std::size_t level = 0;
  return write_level(dict, prototype_, leaf, level, encoder, tensors, matched);
}

bool DictSchema::write_level(const TensorDict& dict, const TensorDict& prototype,
                             std::size_t& leaf, std::size_t& level, Encoder& encoder,
                             std::vector<const Tensor*>& tensors,
                             std::vector<std::uint64_t>& matched) const {
  if (dict.size() != prototype.size()) return false;
  // This level's keys are the schema's when a dict of the same structure had them before;
  // else they are compared, and the structure remembered once they are found equal.
  const std::size_t here = level++;
  if (matched.size() <= here) matched.resize(here + 1, 0);
  const std::uint64_t structure = dict.structure();
  if ((structure == 0 || matched[here] != structure) && dict.keys_ != prototype.keys_) {
    if (!dict.empty() && dict.keys_->names != prototype.keys_->names) return false;
    matched[here] = structure;
  }
  const Value* expected = prototype.values_.data();
  for (const Value& value : dict.values_) {
    const TensorDict* nested = non_empty_dict(value);
    const TensorDict* expected_nested = non_empty_dict(*expected++);
    if ((nested != nullptr) != (expected_nested != nullptr)) return false;
    if (nested != nullptr) {
      if (!write_level(*nested, *expected_nested, leaf, level, encoder, tensors, matched))
        return false;
      continue;
    }
    const Leaf& shape = leaves_[leaf++];
    switch (shape.kind) {
      case MetaEntry::Kind::tensor: {
        const auto* tensor = std::get_if<Tensor>(&value.v);
        if (tensor == nullptr || !tensor->defined() || tensor->dtype() != shape.dtype ||
            tensor->device().type != shape.device || tensor->shape().rank() != shape.rank)
          return false;
        encoder.write_dims(tensor->shape());
        tensors.push_back(tensor);
        break;
      }
      case MetaEntry::Kind::empty_dict:
        if (!value.is<TensorDict>()) return false;
        break;
      case MetaEntry::Kind::value:
        // The scalars a stream's dicts carry (a step, a temperature) are written without
        // is_plain's walk and write_value's dispatch on the value's kind.
        if (const auto* integer = std::get_if<std::int64_t>(&value.v)) {
          encoder.write_int(*integer);
        } else if (const auto* real = std::get_if<double>(&value.v)) {
          encoder.write_float64(*real);
        } else {
          // A value that is not plain goes the full way, whose error names it.
          if (value.is<Tensor>() || value.is<TensorDict>() || !is_plain(value)) return false;
          encoder.write_value(value, Where{nullptr, "a value"});
        }
        break;
    }
  }
  return true;
}

std::optional<TensorDict> DictSchema::read_instance(Decoder& decoder,
                                                    std::span<const Tensor> payloads,
                                                    const Allocator& empty) const {
  TensorDict dict = prototype_;
  std::size_t leaf = 0;
  std::size_t payload = 0;
  if (!read_level(dict, 1, leaf, decoder, payloads, payload, empty) || payload != payloads.size())
    return std::nullopt;
  decoder.expect_end();
  return dict;
}

bool DictSchema::read_level(TensorDict& level, std::size_t depth, std::size_t& leaf,
                            Decoder& decoder, std::span<const Tensor> payloads,
                            std::size_t& payload, const Allocator& empty) const {
  for (Value& value : level.values_) {
    if (auto* nested = std::get_if<TensorDict>(&value.v); nested && !nested->empty()) {
      if (!read_level(*nested, depth + 1, leaf, decoder, payloads, payload, empty)) return false;
      continue;
    }
    const Leaf& shape = leaves_[leaf++];
    switch (shape.kind) {
      case MetaEntry::Kind::tensor: {
        // The payload that comes next, when its shape is the one the bytes give, lands at once.
        if (payload < payloads.size()) {
          const Tensor& received = payloads[payload];
          if (received.dtype() == shape.dtype && received.device().type == shape.device &&
              received.numel() != 0 && decoder.read_dims_of(received, shape.rank)) {
            ++payload;
            value.v.emplace<Tensor>(received);
            break;
          }
        }
        std::int64_t numel = 0;
        Shape dims = decoder.read_dims(shape.rank, shape.dtype, numel);
        // The placeholder is None: emplace builds the tensor where it stays. Device tensors
        // that travelled as host bytes (staged), and empty ones, take the full path, which puts
        // them back on their device.
        if (numel == 0) {
          if (shape.device != DeviceType::cpu) return false;
          value.v.emplace<Tensor>(empty(dims, shape.dtype));
          break;
        }
        if (payload >= payloads.size()) return false;
        const Tensor& received = payloads[payload++];
        if (received.numel() != numel || received.dtype() != shape.dtype ||
            !(received.shape() == dims) || received.device().type != shape.device)
          return false;
        value.v.emplace<Tensor>(received);
        break;
      }
      case MetaEntry::Kind::empty_dict: break;
      case MetaEntry::Kind::value: decoder.read_value_into(value, depth); break;
    }
  }
  return true;
}

Metadata DictSchema::read_metadata(Decoder& decoder) const {
  Metadata metadata = skeleton_;
  for (MetaEntry& entry : metadata.entries) {
    if (entry.kind == MetaEntry::Kind::tensor) {
      std::int64_t numel = 0;
      entry.tensor.shape = decoder.read_dims(entry.tensor.shape.rank(), entry.tensor.dtype, numel);
    } else if (entry.kind == MetaEntry::Kind::value) {
      entry.value = decoder.read_value(entry.path.size());
    }
  }
  decoder.expect_end();
  return metadata;
}

}  // namespace rankmesh
