// A bounded pull reader over msgpack bytes, for input that may be hostile.
// It reads one item header at a time and never allocates: a declared length or count is
// checked against the bytes left before anyone can act on it. msgpack::unpack is not used
// because it reserves `declared count * sizeof(object)` before reading a single element.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <span>
#include <string>

#include "rankmesh/error.hpp"

namespace rankmesh::detail {

// The reads and writes of msgpack's big-endian numbers swap bytes with one instruction.
static_assert(std::endian::native == std::endian::little, "rankmesh's codecs assume a little-endian host");

// One msgpack item as read: scalars carry their value, str/bin their body, arrays their count
// (the elements follow). Every integer form arrives as int64; maps and ext are rejected.
struct MsgpackItem {
  enum class Type { nil, boolean, integer, real, str, bin, array };
  Type type = Type::nil;
  std::size_t offset = 0;  // of the item's first byte
  bool boolean = false;
  std::int64_t integer = 0;
  double real = 0;
  std::span<const std::uint8_t> body;
  std::size_t count = 0;
};

inline const char* to_string(MsgpackItem::Type type) noexcept {
  switch (type) {
    case MsgpackItem::Type::nil: return "nil";
    case MsgpackItem::Type::boolean: return "a bool";
    case MsgpackItem::Type::integer: return "an integer";
    case MsgpackItem::Type::real: return "a float";
    case MsgpackItem::Type::str: return "a string";
    case MsgpackItem::Type::bin: return "bytes";
    case MsgpackItem::Type::array: return "an array";
  }
  return "an unknown item";
}

class MsgpackReader {
public:
  using Type = MsgpackItem::Type;

  // `context` starts every error message ("metadata", "object").
  MsgpackReader(std::span<const std::uint8_t> bytes, const char* context)
      : bytes_(bytes), context_(context) {}

  std::size_t offset() const noexcept { return pos_; }
  std::size_t remaining() const noexcept { return bytes_.size() - pos_; }

  [[noreturn]] void fail(Errc code, std::size_t offset, const std::string& message) const {
    throw Error(
        code, std::string(context_) + ": " + message + " at byte offset " + std::to_string(offset));
  }

  // Throws Error(malformed) for truncated input, unsupported types, a uint64 above INT64_MAX,
  // and a str/bin/array whose declared size cannot fit in the bytes left (each array element
  // takes at least one byte).
  MsgpackItem next() {
    MsgpackItem item;
    item.offset = pos_;
    const std::uint8_t tag = static_cast<std::uint8_t>(take<1>());
    auto integer = [&](std::int64_t value) {
      item.type = Type::integer;
      item.integer = value;
      return item;
    };
    auto array = [&](std::uint64_t declared) {
      item.type = Type::array;
      item.count = checked_count(declared, item.offset);
      return item;
    };
    auto with_body = [&](Type type, std::uint64_t length) {
      item.type = type;
      item.body = take_body(length, item.offset, to_string(type));
      return item;
    };
    if (tag <= 0x7f) return integer(tag);
    if (tag >= 0xe0) return integer(static_cast<std::int8_t>(tag));
    if (tag >= 0x90 && tag <= 0x9f) return array(tag & 0x0fu);
    if (tag >= 0xa0 && tag <= 0xbf) return with_body(Type::str, tag & 0x1fu);
    switch (tag) {
      case 0xc0: return item;
      case 0xc2:
      case 0xc3:
        item.type = Type::boolean;
        item.boolean = tag == 0xc3;
        return item;
      case 0xc4: return with_body(Type::bin, take<1>());
      case 0xc5: return with_body(Type::bin, take<2>());
      case 0xc6: return with_body(Type::bin, take<4>());
      case 0xca:
        item.type = Type::real;
        item.real = std::bit_cast<float>(static_cast<std::uint32_t>(take<4>()));
        return item;
      case 0xcb:
        item.type = Type::real;
        item.real = std::bit_cast<double>(take<8>());
        return item;
      case 0xcc: case 0xcd: case 0xce: case 0xcf: case 0xd0: case 0xd1: case 0xd2: case 0xd3:
        return integer(sized_integer(tag, item.offset));
      case 0xd9: return with_body(Type::str, take<1>());
      case 0xda: return with_body(Type::str, take<2>());
      case 0xdb: return with_body(Type::str, take<4>());
      case 0xdc: return array(take<2>());
      case 0xdd: return array(take<4>());
      default: break;
    }
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", tag);
    fail(Errc::malformed, item.offset,
         std::string("unsupported msgpack type ") + hex +
             " (maps, ext and reserved types are not part of the format)");
  }

  // The typed reads take the one-byte forms (small integers, short arrays and strings: nearly
  // everything in a metadata blob) without going through next().
  std::int64_t read_int(const char* what) {
    if (std::int64_t value = 0; try_read_int(value)) return value;
    return expect(Type::integer, what).integer;  // a negative fixint, or an error naming `what`
  }
  // The next item when it is a positive fixint or a sized integer (a step counting past 127
  // has a sized form): true with `value` set, false with nothing read otherwise.
  bool try_read_int(std::int64_t& value) {
    const int tag = peek();
    if (tag >= 0 && tag <= 0x7f) {
      ++pos_;
      value = tag;
      return true;
    }
    if (tag < 0xcc || tag > 0xd3) return false;
    const std::size_t offset = pos_++;
    value = sized_integer(static_cast<std::uint8_t>(tag), offset);
    return true;
  }
  bool read_bool(const char* what) { return expect(Type::boolean, what).boolean; }
  // The next item's first byte, not read; -1 at the end of the input.
  int peek() const noexcept { return pos_ < bytes_.size() ? bytes_[pos_] : -1; }
  // When the next `count` items are all positive fixints (0..127, one byte each), they are
  // read and returned (a pointer to their bytes); null, with nothing read, otherwise.
  const std::uint8_t* take_fixints(std::size_t count) noexcept {
    const std::uint8_t* at = peek_fixints(count);
    if (at != nullptr) pos_ += count;
    return at;
  }
  // take_fixints() without reading them; skip() reads them after.
  const std::uint8_t* peek_fixints(std::size_t count) const noexcept {
    if (remaining() < count) return nullptr;
    const std::uint8_t* at = bytes_.data() + pos_;
    for (std::size_t i = 0; i < count; ++i)
      if (at[i] > 0x7f) return nullptr;
    return at;
  }
  void skip(std::size_t count) noexcept { pos_ += std::min(count, remaining()); }
  // A float64 (the form rankmesh writes floats in) read directly; any other form through next().
  double read_real(const char* what) {
    if (peek() == 0xcb && remaining() > 8) {
      ++pos_;
      return std::bit_cast<double>(take<8>());
    }
    return expect(Type::real, what).real;
  }
  std::size_t read_array(const char* what) {
    if (pos_ < bytes_.size() && (bytes_[pos_] & 0xf0u) == 0x90) {
      const std::size_t count = bytes_[pos_] & 0x0fu;
      if (count < remaining()) {  // each element takes at least one of the bytes after the tag
        ++pos_;
        return count;
      }
    }
    return expect(Type::array, what).count;
  }
  std::string read_str(const char* what) {
    if (pos_ < bytes_.size() && (bytes_[pos_] & 0xe0u) == 0xa0) {
      const std::size_t length = bytes_[pos_] & 0x1fu;
      if (length < remaining()) {
        const char* text = reinterpret_cast<const char*>(bytes_.data() + pos_ + 1);
        pos_ += 1 + length;
        return std::string(text, length);
      }
    }
    const auto text = expect(Type::str, what).body;
    return std::string(reinterpret_cast<const char*>(text.data()), text.size());
  }

  // One byte as it is, outside msgpack (a frame marker); fails at the end of the input.
  std::uint8_t read_raw_byte() { return static_cast<std::uint8_t>(take<1>()); }

private:
  // The body of an integer of tag 0xcc..0xd3 (uint8..uint64, int8..int64), whose tag at
  // `offset` is read.
  std::int64_t sized_integer(std::uint8_t tag, std::size_t offset) {
    switch (tag) {
      case 0xcc: return static_cast<std::int64_t>(take<1>());
      case 0xcd: return static_cast<std::int64_t>(take<2>());
      case 0xce: return static_cast<std::int64_t>(take<4>());
      case 0xcf: {
        const std::uint64_t value = take<8>();
        if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
          fail(Errc::malformed, offset,
               "unsigned integer " + std::to_string(value) + " exceeds INT64_MAX");
        }
        return static_cast<std::int64_t>(value);
      }
      case 0xd0: return static_cast<std::int8_t>(take<1>());
      case 0xd1: return static_cast<std::int16_t>(take<2>());
      case 0xd2: return static_cast<std::int32_t>(take<4>());
      default: return static_cast<std::int64_t>(take<8>());  // 0xd3
    }
  }

  // A big-endian unsigned integer of `Width` bytes (1, 2, 4 or 8): one load and a byte swap.
  template <std::size_t Width>
  std::uint64_t take() {
    if (remaining() < Width) [[unlikely]] ends_early(Width);
    const std::uint8_t* at = bytes_.data() + pos_;
    pos_ += Width;
    if constexpr (Width == 1) {
      return *at;
    } else if constexpr (Width == 2) {
      std::uint16_t value;
      std::memcpy(&value, at, Width);
      return __builtin_bswap16(value);
    } else if constexpr (Width == 4) {
      std::uint32_t value;
      std::memcpy(&value, at, Width);
      return __builtin_bswap32(value);
    } else {
      static_assert(Width == 8, "msgpack integers are 1, 2, 4 or 8 bytes wide");
      std::uint64_t value;
      std::memcpy(&value, at, Width);
      return __builtin_bswap64(value);
    }
  }
  // Out of line: the message's making stays out of the reads that every message makes.
  [[noreturn, gnu::cold, gnu::noinline]] void ends_early(std::size_t width) const {
    fail(Errc::malformed, pos_,
         "input ends early: " + std::to_string(width) + " more bytes needed, " +
             std::to_string(remaining()) + " left");
  }

  std::span<const std::uint8_t> take_body(std::uint64_t length, std::size_t offset,
                                          const char* type) {
    if (length > remaining()) {
      fail(Errc::malformed, offset,
           std::string(type) + " of " + std::to_string(length) + " bytes runs past the end (" +
               std::to_string(remaining()) + " bytes left)");
    }
    const auto result = bytes_.subspan(pos_, static_cast<std::size_t>(length));
    pos_ += result.size();
    return result;
  }

  std::size_t checked_count(std::uint64_t declared, std::size_t offset) {
    if (declared > remaining()) {
      fail(Errc::malformed, offset,
           "array of " + std::to_string(declared) + " elements cannot fit in the " +
               std::to_string(remaining()) + " bytes left");
    }
    return static_cast<std::size_t>(declared);
  }

  MsgpackItem expect(Type type, const char* what) {
    MsgpackItem item = next();
    if (item.type != type) {
      fail(Errc::malformed, item.offset,
           std::string("expected ") + to_string(type) + " for " + what + ", found " +
               to_string(item.type));
    }
    return item;
  }

  std::span<const std::uint8_t> bytes_;
  std::size_t pos_ = 0;
  const char* context_;
};

}  // namespace rankmesh::detail
