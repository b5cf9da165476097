#include "dict_metadata.hpp"

#include <cstddef>
#include <string>
#include <utility>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

}  // namespace

bool is_plain(const Value& value) {
  if (value.is<Tensor>() || value.is<TensorDict>()) return false;
  if (const auto* list = std::get_if<List>(&value.v)) {
    for (const Value& item : *list) {
      if (!is_plain(item)) return false;
    }
  }
  return true;
}

namespace {

[[noreturn]] void fail(const std::string& message) { throw Error(Errc::invalid_argument, message); }

void split_into(const TensorDict& dict, std::vector<std::string>& path, SplitDict& out) {
  for (const auto& [key, value] : dict) {
    path.push_back(key);
    const auto* tensor = std::get_if<Tensor>(&value.v);
    const auto* nested = std::get_if<TensorDict>(&value.v);
    if (nested != nullptr && !nested->empty()) {
      split_into(*nested, path, out);
      path.pop_back();
      continue;
    }
    MetaEntry& entry = out.metadata.entries.emplace_back();
    entry.path = path;
    if (tensor != nullptr) {
      if (!tensor->defined())
        fail("split: key " + format_key_path(path) + " holds an undefined tensor");
      entry.kind = MetaEntry::Kind::tensor;
      entry.tensor.device_type = tensor->device().type;
      entry.tensor.dtype = tensor->dtype();
      entry.tensor.shape = tensor->shape();
      out.tensors.push_back(*tensor);
    } else if (nested != nullptr) {
      entry.kind = MetaEntry::Kind::empty_dict;
    } else {
      if (!is_plain(value)) {
        fail("split: key " + format_key_path(path) + " holds a list with a tensor or dict inside");
      }
      entry.kind = MetaEntry::Kind::value;
      entry.value = value;
    }
    path.pop_back();
  }
}

// The dict that holds the last key of `path`, creating the dicts on the way.
TensorDict& parent_of(TensorDict& root, const std::vector<std::string>& path) {
  TensorDict* dict = &root;
  for (std::size_t i = 0; i + 1 < path.size(); ++i) {
    Value* step = dict->find(path[i]);
    if (step == nullptr) {
      dict->set(path[i], TensorDict{});
      step = dict->find(path[i]);
    } else if (!step->is<TensorDict>()) {
      const std::vector<std::string> prefix(path.begin(),
                                            path.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      fail("join: key " + format_key_path(path) + " goes through " + format_key_path(prefix) +
           ", which is not a dict");
    }
    dict = &step->as<TensorDict>();
  }
  return *dict;
}

std::string describe(const Shape& shape, DType dtype) {
  return to_string(shape) + " " + to_string(dtype);
}

}  // namespace

std::size_t Metadata::tensor_count() const noexcept {
  std::size_t count = 0;
  for (const MetaEntry& entry : entries) {
    if (entry.kind == MetaEntry::Kind::tensor) ++count;
  }
  return count;
}

std::string format_key_path(const std::vector<std::string>& path) {
  std::string out = "'";
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (i > 0) out += '.';
    out += path[i];
  }
  return out + "'";
}

SplitDict split(const TensorDict& dict) {
  SplitDict out;
  out.metadata.entries.reserve(dict.size());
  out.tensors.reserve(dict.size());
  std::vector<std::string> path;
  split_into(dict, path, out);
  return out;
}

TensorDict join(Metadata metadata, std::vector<Tensor> tensors) {
  const std::size_t expected = metadata.tensor_count();
  if (tensors.size() != expected) {
    fail("join: the metadata describes " + std::to_string(expected) + " tensors but " +
         std::to_string(tensors.size()) + " were given");
  }
  TensorDict root;
  root.reserve(metadata.entries.size());
  std::size_t next_tensor = 0;
  // Keys and values move out of the metadata, which is ours.
  for (MetaEntry& entry : metadata.entries) {
    if (entry.path.empty()) fail("join: a metadata entry has an empty key path");
    TensorDict& parent = parent_of(root, entry.path);
    std::string& key = entry.path.back();
    auto add = [&](Value&& value) {
      if (!parent.try_emplace(std::move(key), std::move(value)))
        fail("join: duplicate key " + format_key_path(entry.path));
    };
    switch (entry.kind) {
      case MetaEntry::Kind::value:
        if (!is_plain(entry.value)) {
          fail("join: key " + format_key_path(entry.path) +
               " holds a tensor or dict as a plain value");
        }
        add(std::move(entry.value));
        break;
      case MetaEntry::Kind::tensor: {
        Tensor& tensor = tensors[next_tensor++];
        const TensorMeta& meta = entry.tensor;
        if (!tensor.defined()) {
          fail("join: the tensor given for " + format_key_path(entry.path) + " is undefined");
        }
        if (tensor.shape() != meta.shape || tensor.dtype() != meta.dtype) {
          fail("join: the tensor given for " + format_key_path(entry.path) + " is " +
               describe(tensor.shape(), tensor.dtype()) + " but the metadata says " +
               describe(meta.shape, meta.dtype));
        }
        add(std::move(tensor));
        break;
      }
      case MetaEntry::Kind::empty_dict: add(TensorDict{}); break;
    }
  }
  return root;
}

}  // namespace rankmesh
