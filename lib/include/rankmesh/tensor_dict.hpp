// TensorDict: ordered string keys -> tensors, plain values, lists and nested dicts.
#pragma once

#include <cstdint>
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
class TensorDict {
public:
  struct Entry;

  // Defined where Entry is complete: Entry holds a Value, which may hold a TensorDict.
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
  std::vector<Entry>::const_iterator begin() const noexcept;
  std::vector<Entry>::const_iterator end() const noexcept;

  // Same keys in the same order with equal values (tensors compared with equal()).
  bool operator==(const TensorDict& other) const;

private:
  // Fills the values of a received dict in place, key by key (lib/src/dict_schema.cpp).
  friend class DictSchema;

  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const noexcept {
      return std::hash<std::string_view>{}(key);
    }
  };

  using Index = std::unordered_map<std::string, std::size_t, KeyHash, std::equal_to<>>;

  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  std::size_t position_of(std::string_view key) const noexcept;
  std::unique_ptr<Index> make_index() const;  // of every entry
  void append(std::string&& key, Value&& value);  // a key known to be new

  // The keys and their order, as a number: a new one (never used before, by any dict) at every
  // insertion and erasure, shared by copies, 0 where unknown (a moved-from dict). A schema
  // cache that matched a dict's keys once skips comparing them for a dict of the same number.
  static std::uint64_t new_structure() noexcept;
  std::uint64_t structure_ = 0;
  std::vector<Entry> entries_;
  // Key -> position, kept only for large dicts so that building one from hostile metadata
  // stays linear; small dicts (the common case) are searched in place and, holding no index,
  // are copied, moved and destroyed without touching one.
  std::unique_ptr<Index> index_;
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

// Inline, here where Entry is complete: every message walks its dict's entries.
inline std::size_t TensorDict::size() const noexcept { return entries_.size(); }
inline bool TensorDict::empty() const noexcept { return entries_.empty(); }
inline std::vector<TensorDict::Entry>::const_iterator TensorDict::begin() const noexcept {
  return entries_.begin();
}
inline std::vector<TensorDict::Entry>::const_iterator TensorDict::end() const noexcept {
  return entries_.end();
}

}  // namespace rankmesh
