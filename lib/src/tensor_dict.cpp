#include "rankmesh/tensor_dict.hpp"

#include <atomic>
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

}  // namespace

std::uint64_t TensorDict::new_structure() noexcept {
  static std::atomic<std::uint64_t> last{0};
  return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

TensorDict::TensorDict() = default;
TensorDict::TensorDict(const TensorDict& other) = default;
TensorDict::TensorDict(TensorDict&& other) noexcept = default;
TensorDict& TensorDict::operator=(const TensorDict& other) = default;
TensorDict& TensorDict::operator=(TensorDict&& other) noexcept = default;
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

TensorDict::Keys& TensorDict::own_keys() {
  if (!keys_) {
    keys_ = std::make_shared<Keys>();
  } else if (keys_.use_count() > 1) {
    // Shared with a copy: this dict's keys change, the copy's stay. No other dict can start
    // sharing it meanwhile: only a holder copies, and this dict is the only one left.
    auto mine = std::make_shared<Keys>();
    mine->names = keys_->names;
    if (keys_->index) mine->index = std::make_unique<Index>(*keys_->index);
    mine->structure = keys_->structure;
    keys_ = std::move(mine);
  } else {
    // The last holder: a copy on another thread (a dict handed over in one process) may have
    // read the table until it let go. Its release of the count, read by use_count(), happens
    // before the writes that follow this fence.
    std::atomic_thread_fence(std::memory_order_acquire);
  }
  return *keys_;
}

void TensorDict::append(std::string&& key, Value&& value) {
  Keys& keys = own_keys();
  keys.names.push_back(std::move(key));
  try {
    values_.push_back(std::move(value));
  } catch (...) {
    keys.names.pop_back();
    throw;
  }
  keys.structure = new_structure();
  if (keys.index != nullptr) {
    keys.index->emplace(keys.names.back(), keys.names.size() - 1);
  } else if (keys.names.size() > kIndexThreshold) {
    keys.reindex();
  }
}

void TensorDict::Keys::reindex() {
  index.reset();
  if (names.size() <= kIndexThreshold) return;
  index = std::make_unique<Index>();
  for (std::size_t i = 0; i < names.size(); ++i) index->emplace(names[i], i);
}

std::size_t TensorDict::position_of(std::string_view key) const noexcept {
  if (!keys_) return npos;
  if (keys_->index != nullptr) {
    const auto it = keys_->index->find(key);
    return it == keys_->index->end() ? npos : it->second;
  }
  const std::vector<std::string>& names = keys_->names;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (names[i] == key) return i;
  }
  return npos;
}

const Value* TensorDict::find(std::string_view key) const {
  const std::size_t position = position_of(key);
  return position == npos ? nullptr : &values_[position];
}

Value* TensorDict::find(std::string_view key) {
  const std::size_t position = position_of(key);
  return position == npos ? nullptr : &values_[position];
}

const Value& TensorDict::at(std::string_view key) const {
  if (const Value* value = find(key)) return *value;
  throw Error(Errc::invalid_argument, "no key '" + std::string(key) + "' in the tensor dict");
}

bool TensorDict::erase(std::string_view key) {
  const std::size_t position = position_of(key);
  if (position == npos) return false;
  Keys& keys = own_keys();
  const auto at = static_cast<std::ptrdiff_t>(position);
  keys.names.erase(keys.names.begin() + at);
  values_.erase(values_.begin() + at);
  keys.structure = new_structure();
  // Positions after the erased key shift, so the index is rebuilt (or dropped when small).
  keys.reindex();
  return true;
}

void TensorDict::reserve(std::size_t keys) {
  values_.reserve(keys);
  own_keys().names.reserve(keys);
}

bool TensorDict::operator==(const TensorDict& other) const {
  if (values_.size() != other.values_.size()) return false;
  // Dicts that share their keys (copies, received dicts of one schema) skip comparing them.
  if (keys_ != other.keys_ && !values_.empty() && keys_->names != other.keys_->names) return false;
  const Value* theirs = other.values_.data();
  for (const Value& mine : values_)
    if (!(mine == *theirs++)) return false;
  return true;
}

bool Value::operator==(const Value& other) const {
  if (v.index() != other.v.index()) return false;
  // The kinds a stream's dicts carry are compared without the visit's dispatch.
  if (const auto* tensor = std::get_if<Tensor>(&v))
    return equal(*tensor, *std::get_if<Tensor>(&other.v));
  if (const auto* integer = std::get_if<std::int64_t>(&v))
    return *integer == *std::get_if<std::int64_t>(&other.v);
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

}  // namespace rankmesh
