#include "rankmesh/tensor_dict.hpp"

#include <bit>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

// Above this many keys a dict keeps a hash index; below it a linear scan is faster.
constexpr std::size_t kIndexThreshold = 16;

bool is_plain(const Value& value) {
  if (value.is<Tensor>() || value.is<TensorDict>()) return false;
  if (const auto* list = std::get_if<List>(&value.v)) {
    for (const Value& item : *list) {
      if (!is_plain(item)) return false;
    }
  }
  return true;
}

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

TensorDict::TensorDict() = default;
TensorDict::TensorDict(const TensorDict&) = default;
TensorDict::TensorDict(TensorDict&&) noexcept = default;
TensorDict& TensorDict::operator=(const TensorDict&) = default;
TensorDict& TensorDict::operator=(TensorDict&&) noexcept = default;
TensorDict::~TensorDict() = default;

TensorDict::TensorDict(std::initializer_list<Entry> entries) {
  for (const Entry& entry : entries) set(entry.key, entry.value);
}

void TensorDict::set(std::string key, Value value) {
  if (Value* existing = find(key)) {
    *existing = std::move(value);
    return;
  }
  append(std::move(key), std::move(value));
}

bool TensorDict::try_emplace(std::string&& key, Value&& value) {
  if (position_of(key) != npos) return false;
  append(std::move(key), std::move(value));
  return true;
}

void TensorDict::append(std::string key, Value value) {
  entries_.push_back(Entry{std::move(key), std::move(value)});
  if (entries_.size() == kIndexThreshold + 1) {
    for (std::size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].key, i);
  } else if (!index_.empty()) {
    index_.emplace(entries_.back().key, entries_.size() - 1);
  }
}

std::size_t TensorDict::position_of(std::string_view key) const noexcept {
  if (!index_.empty()) {
    const auto it = index_.find(key);
    return it == index_.end() ? npos : it->second;
  }
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].key == key) return i;
  }
  return npos;
}

const Value* TensorDict::find(std::string_view key) const {
  const std::size_t position = position_of(key);
  return position == npos ? nullptr : &entries_[position].value;
}

Value* TensorDict::find(std::string_view key) {
  const std::size_t position = position_of(key);
  return position == npos ? nullptr : &entries_[position].value;
}

const Value& TensorDict::at(std::string_view key) const {
  if (const Value* value = find(key)) return *value;
  throw Error(Errc::invalid_argument, "no key '" + std::string(key) + "' in the tensor dict");
}

bool TensorDict::erase(std::string_view key) {
  const std::size_t position = position_of(key);
  if (position == npos) return false;
  entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(position));
  // Positions after the erased key shift, so the index is rebuilt (or dropped when small).
  index_.clear();
  if (entries_.size() > kIndexThreshold) {
    for (std::size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].key, i);
  }
  return true;
}

std::size_t TensorDict::size() const noexcept { return entries_.size(); }

void TensorDict::reserve(std::size_t keys) { entries_.reserve(keys); }

bool TensorDict::empty() const noexcept { return entries_.empty(); }

std::vector<TensorDict::Entry>::const_iterator TensorDict::begin() const noexcept {
  return entries_.begin();
}

std::vector<TensorDict::Entry>::const_iterator TensorDict::end() const noexcept {
  return entries_.end();
}

bool TensorDict::operator==(const TensorDict& other) const {
  if (entries_.size() != other.entries_.size()) return false;
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].key != other.entries_[i].key) return false;
    if (!(entries_[i].value == other.entries_[i].value)) return false;
  }
  return true;
}

bool Value::operator==(const Value& other) const {
  if (v.index() != other.v.index()) return false;
  return std::visit(
      [&](const auto& mine) -> bool {
        using T = std::decay_t<decltype(mine)>;
        const T& theirs = std::get<T>(other.v);
        if constexpr (std::is_same_v<T, double>) {
          return std::bit_cast<std::uint64_t>(mine) == std::bit_cast<std::uint64_t>(theirs);
        } else if constexpr (std::is_same_v<T, Tensor>) {
          return equal(mine, theirs);
        } else {
          return mine == theirs;
        }
      },
      v);
}

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
