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
TensorDict::TensorDict(const TensorDict& other)
    : structure_(other.structure_), entries_(other.entries_),
      index_(other.index_ != nullptr ? std::make_unique<Index>(*other.index_) : nullptr) {}
TensorDict::TensorDict(TensorDict&& other) noexcept
    : structure_(std::exchange(other.structure_, 0)), entries_(std::move(other.entries_)),
      index_(std::move(other.index_)) {}
TensorDict& TensorDict::operator=(const TensorDict& other) {
  if (this != &other) *this = TensorDict(other);
  return *this;
}
TensorDict& TensorDict::operator=(TensorDict&& other) noexcept {
  if (this != &other) {
    structure_ = std::exchange(other.structure_, 0);
    entries_ = std::move(other.entries_);
    index_ = std::move(other.index_);
  }
  return *this;
}
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

void TensorDict::append(std::string&& key, Value&& value) {
  // Made in place, then each moved once (a temporary Entry would move the value twice more).
  Entry& entry = entries_.emplace_back();
  entry.key = std::move(key);
  entry.value = std::move(value);
  structure_ = new_structure();
  if (index_ != nullptr) {
    index_->emplace(entries_.back().key, entries_.size() - 1);
  } else if (entries_.size() > kIndexThreshold) {
    index_ = make_index();
  }
}

std::unique_ptr<TensorDict::Index> TensorDict::make_index() const {
  auto index = std::make_unique<Index>();
  for (std::size_t i = 0; i < entries_.size(); ++i) index->emplace(entries_[i].key, i);
  return index;
}

std::size_t TensorDict::position_of(std::string_view key) const noexcept {
  if (index_ != nullptr) {
    const auto it = index_->find(key);
    return it == index_->end() ? npos : it->second;
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
  structure_ = new_structure();
  // Positions after the erased key shift, so the index is rebuilt (or dropped when small).
  index_ = entries_.size() > kIndexThreshold ? make_index() : nullptr;
  return true;
}

void TensorDict::reserve(std::size_t keys) { entries_.reserve(keys); }

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
