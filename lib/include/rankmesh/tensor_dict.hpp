// TensorDict: ordered string keys -> tensors, plain values, lists and nested dicts.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "rankmesh/tensor.hpp"

namespace rankmesh {

struct None {
  bool operator==(const None&) const = default;
};
using Bytes = std::vector<std::uint8_t>;

struct Value;
using List = std::vector<Value>;

// Keys keep insertion order; setting an existing key replaces its value in place.
//
// The keys live apart from the values, in a table that copies of a dict share until one of them
// adds or erases a key (then it takes a table of its own): a copy, and a received dict built from
// its schema's prototype, copy no key.
class TensorDict {
public:
  // An entry to build a dict from (the initializer-list constructor).
  struct Entry;
  // What iterating a dict gives: its key and its value, in insertion order.
  struct EntryRef {
    const std::string& key;
    const Value& value;
  };
  class const_iterator;

  // Defined where Value is complete: a dict holds Values, which may hold a TensorDict.
  TensorDict();
  TensorDict(const TensorDict&);
  TensorDict(TensorDict&&) noexcept;
  TensorDict& operator=(const TensorDict&);
  TensorDict& operator=(TensorDict&&) noexcept;
  ~TensorDict();

  TensorDict(std::initializer_list<Entry> entries);

  void set(std::string key, Value value);
  // Adds the key unless it is present already; false (and nothing changes, nothing is moved
  // from) when it is.
  bool try_emplace(std::string&& key, Value&& value);
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  // Throws Error(invalid_argument) naming the key when it is absent.
  const Value& at(std::string_view key) const;
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  bool erase(std::string_view key);

  std::size_t size() const noexcept;
  bool empty() const noexcept;
  // Room for `keys` keys without reallocating.
  void reserve(std::size_t keys);
  const_iterator begin() const noexcept;
  const_iterator end() const noexcept;

  // Same keys in the same order with equal values (tensors compared with equal()).
  bool operator==(const TensorDict& other) const;

private:
  // Fills the values of a received dict in place, key by key (lib/src/dict_schema.cpp).
  friend class DictSchema;
  // Replaces the tensors of a dict handed over in one process by the peer's copies (dict_leaves.hpp).
  friend struct DictLeaves;

  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const noexcept {
      return std::hash<std::string_view>{}(key);
    }
  };
  using Index = std::unordered_map<std::string, std::size_t, KeyHash, std::equal_to<>>;

  // The keys and their order, never changed while two dicts share them.
  struct Keys {
    std::vector<std::string> names;
    // Key -> position, kept only for large dicts so that building one from hostile metadata
    // stays linear; small dicts (the common case) are searched in place.
    std::unique_ptr<Index> index;
    // The keys and their order, as a number: a new one (never used before, by any table) at
    // every insertion and erasure. A schema cache that matched a dict's keys once skips
    // comparing them for a dict of the same number.
    std::uint64_t structure = 0;
    void reindex();  // the index made again for the names (dropped for a small dict)
  };

  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  static std::uint64_t new_structure() noexcept;
  std::size_t position_of(std::string_view key) const noexcept;
  void append(std::string&& key, Value&& value);  // a key known to be new
  Keys& own_keys();  // the table, made or unshared first: the keys are about to change
  // 0 where the dict has no keys table (empty, or moved from).
  std::uint64_t structure() const noexcept { return keys_ ? keys_->structure : 0; }

  std::shared_ptr<Keys> keys_;  // null while the dict has no keys
  std::vector<Value> values_;   // values_[i] is the value of keys_->names[i]
};

// One value of a dict. A List holds plain values only (no tensors, no dicts).
struct Value {
  using Variant = std::variant<None, bool, std::int64_t, double, std::string, Bytes, List,
                               TensorDict, Tensor>;
  Variant v;

  Value() = default;
  Value(None) {}
  Value(bool b) : v(b) {}
  Value(int i) : v(std::int64_t{i}) {}
  Value(std::int64_t i) : v(i) {}
  Value(double d) : v(d) {}
  Value(const char* s) : v(std::string(s)) {}
  Value(std::string s) : v(std::move(s)) {}
  Value(Bytes b) : v(std::move(b)) {}
  Value(List l) : v(std::move(l)) {}
  Value(TensorDict d) : v(std::move(d)) {}
  Value(Tensor t) : v(std::move(t)) {}

  // A copy dispatches on the alternative only where it owns something: plain scalars (most of a
  // stream's values, and every placeholder of a received dict's prototype) are copied as they are.
  Value(const Value& other) : v(copied(other.v)) {}
  Value(Value&&) noexcept = default;
  Value& operator=(const Value&) = default;
  Value& operator=(Value&&) noexcept = default;
  ~Value() = default;

  template <class T>
  bool is() const noexcept { return std::holds_alternative<T>(v); }
  template <class T>
  const T& as() const { return std::get<T>(v); }
  template <class T>
  T& as() { return std::get<T>(v); }

  // Floats compare by bit pattern, like tensor bytes, so a NaN survives a round trip equal.
  bool operator==(const Value& other) const;

private:
  static Variant copied(const Variant& from) {
    static_assert(std::is_same_v<std::variant_alternative_t<0, Variant>, None> &&
                  std::is_same_v<std::variant_alternative_t<1, Variant>, bool> &&
                  std::is_same_v<std::variant_alternative_t<2, Variant>, std::int64_t> &&
                  std::is_same_v<std::variant_alternative_t<3, Variant>, double>);
    switch (from.index()) {
      case 0: return Variant(std::in_place_index<0>);
      case 1: return Variant(std::in_place_index<1>, *std::get_if<1>(&from));
      case 2: return Variant(std::in_place_index<2>, *std::get_if<2>(&from));
      case 3: return Variant(std::in_place_index<3>, *std::get_if<3>(&from));
      default: return from;
    }
  }
};

struct TensorDict::Entry {
  std::string key;
  Value value;
};

class TensorDict::const_iterator {
public:
  // Entries are given by value (a pair of references), so to pre-C++20 algorithms this is an
  // input iterator; to C++20's (std::ranges, the iterator concepts) it is random access.
  using iterator_category = std::input_iterator_tag;
  using iterator_concept = std::random_access_iterator_tag;
  using value_type = EntryRef;
  using reference = EntryRef;
  using difference_type = std::ptrdiff_t;
  // it->key: the entry held for the arrow to point at.
  struct pointer {
    EntryRef entry;
    const EntryRef* operator->() const noexcept { return &entry; }
  };

  const_iterator() = default;
  EntryRef operator*() const noexcept { return EntryRef{names_[i_], values_[i_]}; }
  pointer operator->() const noexcept { return pointer{**this}; }
  EntryRef operator[](difference_type n) const noexcept { return *(*this + n); }
  const_iterator& operator++() noexcept { ++i_; return *this; }
  const_iterator operator++(int) noexcept { const_iterator was = *this; ++i_; return was; }
  const_iterator& operator--() noexcept { --i_; return *this; }
  const_iterator operator--(int) noexcept { const_iterator was = *this; --i_; return was; }
  const_iterator& operator+=(difference_type n) noexcept { i_ += n; return *this; }
  const_iterator& operator-=(difference_type n) noexcept { i_ -= n; return *this; }
  friend const_iterator operator+(const_iterator it, difference_type n) noexcept { return it += n; }
  friend const_iterator operator+(difference_type n, const_iterator it) noexcept { return it += n; }
  friend const_iterator operator-(const_iterator it, difference_type n) noexcept { return it -= n; }
  friend difference_type operator-(const const_iterator& a, const const_iterator& b) noexcept {
    return a.i_ - b.i_;
  }
  friend bool operator==(const const_iterator& a, const const_iterator& b) noexcept {
    return a.i_ == b.i_;
  }
  friend auto operator<=>(const const_iterator& a, const const_iterator& b) noexcept {
    return a.i_ <=> b.i_;
  }

private:
  friend class TensorDict;
  const_iterator(const std::string* names, const Value* values, difference_type i) noexcept
      : names_(names), values_(values), i_(i) {}
  const std::string* names_ = nullptr;
  const Value* values_ = nullptr;
  difference_type i_ = 0;
};

// Inline, here where Value is complete: every message walks its dict's entries.
inline std::size_t TensorDict::size() const noexcept { return values_.size(); }
inline bool TensorDict::empty() const noexcept { return values_.empty(); }
inline TensorDict::const_iterator TensorDict::begin() const noexcept {
  return const_iterator(keys_ ? keys_->names.data() : nullptr, values_.data(), 0);
}
inline TensorDict::const_iterator TensorDict::end() const noexcept {
  return const_iterator(nullptr, nullptr, static_cast<std::ptrdiff_t>(values_.size()));
}

}  // namespace rankmesh
