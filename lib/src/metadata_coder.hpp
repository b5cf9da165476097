// The msgpack coder of the metadata format: the Encoder and Decoder behind codec.hpp's
// functions, shared with the schema cache (dict_schema.cpp), whose instances carry values and
// dimensions in the same encoding. Internal to lib.
#pragma once

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <msgpack/pack.hpp>

#include "dict_metadata.hpp"
#include "frame_limits.hpp"
#include "msgpack_reader.hpp"
#include "rankmesh/error.hpp"

// Wire format, version 1, msgpack arrays throughout (positional fields decode ~3x faster than
// maps and carry no key names):
//   metadata: [1, [entry, ...]]
//     entry: [0, path, value]                                     a plain value
//            [1, path, device_type, dtype, [dim, ...], sliced]    a tensor
//            [2, path]                                            an empty nested dict
//     path:  [key, ...], at least one key
//   object:  [1, value]
//   value:   nil | bool | int | float64 | str | bin | [value, ...]
// Kinds, device types and dtypes travel as their enum codes.

namespace rankmesh::detail {


inline constexpr std::int64_t kFormatVersion = 1;
// How many fields an entry of each kind has (value, tensor, empty dict).
inline constexpr std::size_t kFieldsOfKind[] = {3, 6, 2};


// Lets msgpack's packer append to the caller's vector, so its capacity is reused. The packer
// writes a few bytes at a time: a plain copy behind a size check, not vector::insert's general
// path (which cost ~2.8k instructions per small dict). The vector grows in steps and is cut to
// what was written at the end (finish()).
// Writes over `out` from its start; finish() cuts it to what was written. `out` keeps its size
// until then: a frame's metadata vector, reused message after message, is not zero-filled anew
// each time it grows back to the size of the last one.
struct VectorSink {
  std::vector<std::uint8_t>& out;
  std::size_t written = 0;
  void write_byte(std::uint8_t byte) {
    if (written < out.size()) {
      out[written++] = byte;
    } else {
      write(reinterpret_cast<const char*>(&byte), 1);
    }
  }
  void write(const char* data, std::size_t size) {
    if (size == 0) return;  // an empty str or bin body may come with a null pointer
    if (out.size() - written < size) {
      std::size_t want = written + std::max<std::size_t>(size, 256);
      if (want > out.capacity() && written + size <= out.capacity()) want = out.capacity();
      out.resize(want);
    }
    std::memcpy(out.data() + written, data, size);
    written += size;
  }
  void finish() { out.resize(written); }
};

// What an encoding error names: a key path, or a fixed description. Built into text only when
// an error is thrown, never per entry.
struct Where {
  const std::vector<std::string>* path = nullptr;
  const char* text = "";
  const std::vector<const std::string*>* keys = nullptr;  // a path being walked in a dict
  std::string str() const {
    if (keys != nullptr) {
      std::vector<std::string> spelled;
      for (const std::string* key : *keys) spelled.push_back(*key);
      return "key " + format_key_path(spelled);
    }
    return path != nullptr ? "key " + format_key_path(*path) : text;
  }
};

// The metadata entries a dict makes: its keys, nested dicts flattened (an empty one is an entry).
inline std::size_t count_entries(const TensorDict& dict) {
  std::size_t count = 0;
  for (const auto& [key, value] : dict) {
    const auto* nested = std::get_if<TensorDict>(&value.v);
    count += nested != nullptr && !nested->empty() ? count_entries(*nested) : 1;
  }
  return count;
}

class Encoder {
public:
  explicit Encoder(std::vector<std::uint8_t>& out) : sink_{out}, packer_(sink_) {}

  void write_metadata(const Metadata& metadata) {
    packer_.pack_array(2);
    packer_.pack_int64(kFormatVersion);
    write_array_header(metadata.entries.size(), Where{nullptr, "the metadata entries"});
    for (const MetaEntry& entry : metadata.entries) write_entry(entry);
    sink_.finish();
  }

  // The bytes write_metadata(split(dict).metadata) writes, straight from the dict (no key path
  // or value is copied); its tensors are appended to `tensors` in metadata order, as pointers
  // into `dict` (what travels is decided from them: no hold is taken on a tensor to be copied).
  void write_dict(const TensorDict& dict, std::vector<const Tensor*>& tensors) {
    packer_.pack_array(2);
    packer_.pack_int64(kFormatVersion);
    write_array_header(count_entries(dict), Where{nullptr, "the metadata entries"});
    std::vector<const std::string*> keys;
    keys.reserve(4);
    write_dict_entries(dict, keys, tensors);
    sink_.finish();
  }

  void write_object(const Value& object) {
    packer_.pack_array(2);
    packer_.pack_int64(kFormatVersion);
    write_value(object, Where{nullptr, "an object"});
    sink_.finish();
  }

  // The pieces of the schema cache's frames (schema_cache.hpp). Each write_* above ends the
  // bytes itself; after these pieces alone, finish() does.
  void write_byte(std::uint8_t byte) { sink_.write_byte(byte); }
  void write_uint(std::uint64_t value) { packer_.pack_uint64(value); }
  // msgpack's one-byte form for 0..127 (dimensions, steps) without the packer's general case.
  void write_int(std::int64_t value) {
    if (value >= 0 && value <= 0x7f) {
      sink_.write_byte(static_cast<std::uint8_t>(value));
    } else {
      packer_.pack_int64(value);
    }
  }
  // A plain value that is a float. Not packer::pack_double: msgpack-c 4.x writes integral
  // doubles as integers, so 1.0 would come back as the int 1.
  void write_float64(double d) {
    const std::uint64_t big_endian = __builtin_bswap64(std::bit_cast<std::uint64_t>(d));
    char buffer[9] = {static_cast<char>(0xcb)};
    std::memcpy(buffer + 1, &big_endian, sizeof big_endian);
    sink_.write(buffer, sizeof buffer);
  }
  void write_dims(const Shape& shape) {
    for (std::int64_t dim : shape) write_int(dim);
  }
  void finish() { sink_.finish(); }

private:
  void write_dict_entries(const TensorDict& dict, std::vector<const std::string*>& keys,
                          std::vector<const Tensor*>& tensors) {
    for (const auto& [key, value] : dict) {
      keys.push_back(&key);
      const Where where{nullptr, "", &keys};
      const auto* nested = std::get_if<TensorDict>(&value.v);
      if (nested != nullptr && !nested->empty()) {
        write_dict_entries(*nested, keys, tensors);
        keys.pop_back();
        continue;
      }
      const auto* tensor = std::get_if<Tensor>(&value.v);
      const auto kind = tensor != nullptr   ? MetaEntry::Kind::tensor
                        : nested != nullptr ? MetaEntry::Kind::empty_dict
                                            : MetaEntry::Kind::value;
      switch (kind) {
        case MetaEntry::Kind::value: packer_.pack_array(3); break;
        case MetaEntry::Kind::tensor: packer_.pack_array(6); break;
        case MetaEntry::Kind::empty_dict: packer_.pack_array(2); break;
      }
      packer_.pack_int64(static_cast<std::int64_t>(kind));
      write_array_header(keys.size(), where);
      for (const std::string* part : keys) write_string(*part, where);
      if (kind == MetaEntry::Kind::tensor) {
        if (!tensor->defined())
          throw Error(Errc::invalid_argument, "split: " + where.str() + " holds an undefined tensor");
        packer_.pack_int64(static_cast<std::int64_t>(tensor->device().type));
        packer_.pack_int64(static_cast<std::int64_t>(tensor->dtype()));
        packer_.pack_array(static_cast<std::uint32_t>(tensor->shape().rank()));
        for (std::int64_t dim : tensor->shape()) packer_.pack_int64(dim);
        write_bool(false);  // whole: slicing goes through split() and write_metadata()
        tensors.push_back(tensor);
      } else if (kind == MetaEntry::Kind::value) {
        if (!is_plain(value))
          throw Error(Errc::invalid_argument,
                      "split: " + where.str() + " holds a list with a tensor or dict inside");
        write_value(value, where);
      }
      keys.pop_back();
    }
  }

  void write_entry(const MetaEntry& entry) {
    if (entry.path.empty()) {
      throw Error(Errc::invalid_argument, "encode: a metadata entry has an empty key path");
    }
    const Where where{&entry.path};
    switch (entry.kind) {
      case MetaEntry::Kind::value: packer_.pack_array(3); break;
      case MetaEntry::Kind::tensor: packer_.pack_array(6); break;
      case MetaEntry::Kind::empty_dict: packer_.pack_array(2); break;
    }
    packer_.pack_int64(static_cast<std::int64_t>(entry.kind));
    write_array_header(entry.path.size(), where);
    for (const std::string& key : entry.path) write_string(key, where);
    if (entry.kind == MetaEntry::Kind::value) {
      write_value(entry.value, where);
    } else if (entry.kind == MetaEntry::Kind::tensor) {
      const TensorMeta& tensor = entry.tensor;
      packer_.pack_int64(static_cast<std::int64_t>(tensor.device_type));
      packer_.pack_int64(static_cast<std::int64_t>(tensor.dtype));
      packer_.pack_array(static_cast<std::uint32_t>(tensor.shape.rank()));
      for (std::int64_t dim : tensor.shape) packer_.pack_int64(dim);
      write_bool(tensor.sliced);
    }
  }

public:
  void write_value(const Value& plain, const Where& where) {
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, None>) {
            packer_.pack_nil();
          } else if constexpr (std::is_same_v<T, bool>) {
            write_bool(v);
          } else if constexpr (std::is_same_v<T, std::int64_t>) {
            write_int(v);
          } else if constexpr (std::is_same_v<T, double>) {
            write_float64(v);
          } else if constexpr (std::is_same_v<T, std::string>) {
            write_string(v, where);
          } else if constexpr (std::is_same_v<T, Bytes>) {
            packer_.pack_bin(checked_length(v.size(), where));
            packer_.pack_bin_body(reinterpret_cast<const char*>(v.data()),
                                  static_cast<std::uint32_t>(v.size()));
          } else if constexpr (std::is_same_v<T, List>) {
            write_array_header(v.size(), where);
            for (const Value& item : v) write_value(item, where);
          } else {
            static_assert(std::is_same_v<T, Tensor> || std::is_same_v<T, TensorDict>);
            throw Error(Errc::invalid_argument,
                        "encode: " + where.str() +
                            " holds a tensor or dict where only plain values can go");
          }
        },
        plain.v);
  }

private:
  void write_bool(bool b) {
    if (b) {
      packer_.pack_true();
    } else {
      packer_.pack_false();
    }
  }


  void write_string(const std::string& s, const Where& where) {
    packer_.pack_str(checked_length(s.size(), where));
    packer_.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
  }

  void write_array_header(std::size_t size, const Where& where) {
    packer_.pack_array(checked_length(size, where));
  }

  static std::uint32_t checked_length(std::size_t size, const Where& where) {
    if (size > std::numeric_limits<std::uint32_t>::max()) {
      throw Error(Errc::invalid_argument, "encode: " + where.str() + " has " +
                                              std::to_string(size) +
                                              " elements, more than msgpack can carry");
    }
    return static_cast<std::uint32_t>(size);
  }

  VectorSink sink_;
  msgpack::packer<VectorSink> packer_;
};

// Reads one format off a MsgpackReader, enforcing the limits as it goes.
class Decoder {
public:
  Decoder(std::span<const std::uint8_t> bytes, const FrameLimits& limits, const char* context)
      : reader_(bytes, context), limits_(limits) {
    if (bytes.size() > limits.max_metadata_bytes) {
      reader_.fail(Errc::limit_exceeded, 0,
                   std::to_string(bytes.size()) + " bytes exceed max_metadata_bytes " +
                       std::to_string(limits.max_metadata_bytes));
    }
  }

  Metadata read_metadata() {
    read_version();
    Metadata metadata;
    const std::size_t offset = reader_.offset();
    const std::size_t count = reader_.read_array("the metadata entries");
    spend_entries(count, offset);
    metadata.entries.reserve(count);
    // Each entry is read where it stays: a MetaEntry moved is a vector, a variant and a shape.
    for (std::size_t i = 0; i < count; ++i) read_entry(metadata.entries.emplace_back());
    expect_end();
    return metadata;
  }

  // The dict that read_metadata() then join() would build, built in place; tensors are
  // `payloads` in order (their dtype and shape as the metadata says), those without elements
  // made by `empty`. False, with `root` left half built, wherever the frame is anything but
  // plain — a slice, payloads that do not fit or are not all used, a duplicate key, a path
  // through a value: the caller then takes the full path, which names what is wrong.
  bool read_dict(TensorDict& root, std::span<const Tensor> payloads, const Allocator& empty) {
    read_version();
    const std::size_t offset = reader_.offset();
    const std::size_t count = reader_.read_array("the metadata entries");
    spend_entries(count, offset);
    root.reserve(count);
    std::size_t next_payload = 0;
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t entry_offset = reader_.offset();
      const std::size_t fields = reader_.read_array("a metadata entry");
      const std::int64_t kind = reader_.read_int("the entry kind");
      if (kind < 0 || kind > static_cast<std::int64_t>(MetaEntry::Kind::empty_dict) ||
          fields != kFieldsOfKind[kind])
        return false;
      const std::size_t depth = reader_.read_array("a key path");
      if (depth == 0 || depth > limits_.max_depth) return false;
      spend_entries(depth, entry_offset);
      TensorDict* parent = &root;
      for (std::size_t level = 0; level + 1 < depth; ++level) {
        std::string key = reader_.read_str("a key");
        Value* step = parent->find(key);
        if (step == nullptr) {  // a nested dict, made by its first key
          parent->set(key, TensorDict{});
          step = parent->find(key);
        }
        if (!step->is<TensorDict>()) return false;
        parent = &step->as<TensorDict>();
      }
      std::string key = reader_.read_str("a key");
      Value value;
      switch (static_cast<MetaEntry::Kind>(kind)) {
        case MetaEntry::Kind::value: value = read_value(depth); break;
        case MetaEntry::Kind::empty_dict: value = Value(TensorDict{}); break;
        case MetaEntry::Kind::tensor: {
          TensorMeta meta;
          read_tensor(meta);
          if (meta.sliced) return false;
          // A device tensor that travelled as host bytes (staged) is put back on its device by
          // the full path, as is an empty one (`empty` allocates host memory).
          if (meta.shape.numel() == 0) {
            if (meta.device_type != DeviceType::cpu) return false;
            value = Value(empty(meta.shape, meta.dtype));
          } else {
            if (next_payload >= payloads.size()) return false;
            const Tensor& payload = payloads[next_payload++];
            if (payload.dtype() != meta.dtype || !(payload.shape() == meta.shape) ||
                payload.device().type != meta.device_type)
              return false;
            value = Value(payload);
          }
          break;
        }
      }
      if (!parent->try_emplace(std::move(key), std::move(value))) return false;
    }
    expect_end();
    return next_payload == payloads.size();
  }

  Value read_object() {
    read_version();
    Value object = read_value(0);
    expect_end();
    return object;
  }

  // The pieces of the schema cache's frames (schema_cache.hpp).
  std::size_t offset() const noexcept { return reader_.offset(); }
  std::uint8_t read_byte() { return reader_.read_raw_byte(); }
  std::uint64_t read_uint(const char* what) {
    const std::size_t at = reader_.offset();
    const std::int64_t value = reader_.read_int(what);
    if (value < 0) reader_.fail(Errc::malformed, at, std::string(what) + " is negative");
    return static_cast<std::uint64_t>(value);
  }
  // A tensor leaf whose payload is `received` (of the leaf's dtype, with elements), in the
  // common case: its dimensions, `rank` of them, are one byte each and those of `received`.
  // Then they are read (the payload counted against the limit) and true is returned, with no
  // Shape built; false, with nothing read, otherwise (read_dims() then takes the general way).
  bool read_dims_of(const Tensor& received, std::size_t rank) {
    const Shape& shape = received.shape();
    if (static_cast<std::size_t>(shape.rank()) != rank) return false;
    const std::uint8_t* dims = reader_.peek_fixints(rank);
    if (dims == nullptr) return false;
    for (std::size_t i = 0; i < rank; ++i)
      if (dims[i] != shape[static_cast<int>(i)]) return false;
    count_payload(reader_.offset(), received.nbytes(), shape, received.dtype());
    reader_.skip(rank);
    return true;
  }

  // A shape of `rank` dimensions whose count the caller knows, checked as a shape is; `numel`
  // gets its element count (counted while checking the payload's size anyway).
  [[gnu::always_inline]] Shape read_dims(std::size_t rank, DType dtype, std::int64_t& numel) {
    // Dimensions below 128 (a small message's, most of a stream's) take one byte each: they
    // are read in one pass, where neither a dimension nor their product (below 2^56 for 8 of
    // them) can be out of range; the payload limit is still checked. Others: the general way.
    const std::size_t offset = reader_.offset();
    if (rank <= max_rank())
      if (const std::uint8_t* dims = reader_.take_fixints(rank)) {
        Shape shape;
        numel = 1;
        for (std::size_t i = 0; i < rank; ++i) {
          shape.push_back(dims[i]);
          numel *= dims[i];
        }
        count_payload(offset, static_cast<std::uint64_t>(numel) * dtype_size(dtype), shape, dtype);
        return shape;
      }
    return read_dims_in_general(offset, rank, dtype, numel);
  }
  [[noreturn]] void fail(Errc code, std::size_t at, const std::string& message) const {
    reader_.fail(code, at, message);
  }
  void expect_end() {
    if (reader_.remaining() != 0) {
      reader_.fail(Errc::malformed, reader_.offset(),
                   std::to_string(reader_.remaining()) + " trailing bytes");
    }
  }
  // `depth`: how many levels (keys of the path, enclosing lists) this value sits below the top.
  Value read_value(std::size_t depth) {
    Value value;
    read_value_into(value, depth);
    return value;
  }
  // read_value() into a value that exists (a received dict's placeholder): scalars are written
  // in place, with no temporary Value to move and destroy.
  void read_value_into(Value& out, std::size_t depth) {
    // The forms a stream's scalars take (a step, a temperature), read without a general item.
    // A placeholder of the kind that arrives (a schema's placeholders take the kind of the
    // value it was learnt from) is assigned to, without the variant's reset.
    if (std::int64_t integer = 0; reader_.try_read_int(integer)) {
      if (auto* held = std::get_if<std::int64_t>(&out.v)) {
        *held = integer;
      } else {
        out.v.emplace<std::int64_t>(integer);
      }
      return;
    }
    if (reader_.peek() == 0xcb) {
      const double real = reader_.read_real("a value");
      if (auto* held = std::get_if<double>(&out.v)) {
        *held = real;
      } else {
        out.v.emplace<double>(real);
      }
      return;
    }
    const MsgpackItem item = reader_.next();
    switch (item.type) {
      case MsgpackItem::Type::nil: out.v.emplace<None>(); return;
      case MsgpackItem::Type::boolean: out.v.emplace<bool>(item.boolean); return;
      case MsgpackItem::Type::integer: out.v.emplace<std::int64_t>(item.integer); return;
      case MsgpackItem::Type::real: out.v.emplace<double>(item.real); return;
      case MsgpackItem::Type::str:
        out.v.emplace<std::string>(reinterpret_cast<const char*>(item.body.data()),
                                   item.body.size());
        return;
      case MsgpackItem::Type::bin:
        out.v.emplace<Bytes>(item.body.begin(), item.body.end());
        return;
      case MsgpackItem::Type::array: break;
    }
    if (depth >= limits_.max_depth) {
      reader_.fail(Errc::limit_exceeded, item.offset,
                   "a list nests deeper than max_depth " + std::to_string(limits_.max_depth));
    }
    spend_entries(item.count, item.offset);
    List list;
    list.reserve(item.count);
    for (std::size_t i = 0; i < item.count; ++i) read_value_into(list.emplace_back(), depth + 1);
    out.v.emplace<List>(std::move(list));
  }

private:
  // [version, body]: the version comes first so that a future format is named as such.
  void read_version() {
    const std::size_t offset = reader_.offset();
    const std::size_t fields = reader_.read_array("the top level");
    if (fields == 0) reader_.fail(Errc::malformed, offset, "the top-level array is empty");
    const std::size_t version_offset = reader_.offset();
    const std::int64_t version = reader_.read_int("the format version");
    if (version != kFormatVersion) {
      reader_.fail(Errc::malformed, version_offset,
                   "format version " + std::to_string(version) +
                       " is not supported (this build reads version " +
                       std::to_string(kFormatVersion) + ")");
    }
    if (fields != 2) {
      reader_.fail(Errc::malformed, offset,
                   "the top-level array has " + std::to_string(fields) + " fields, expected 2");
    }
  }



  void read_entry(MetaEntry& entry) {
    const std::size_t offset = reader_.offset();
    const std::size_t fields = reader_.read_array("a metadata entry");
    if (fields == 0) reader_.fail(Errc::malformed, offset, "a metadata entry is empty");
    const std::size_t kind_offset = reader_.offset();
    const std::int64_t kind = reader_.read_int("the entry kind");
    if (kind < 0 || kind > static_cast<std::int64_t>(MetaEntry::Kind::empty_dict)) {
      reader_.fail(Errc::malformed, kind_offset,
                   "entry kind " + std::to_string(kind) + " is unknown");
    }
    const std::size_t expected = kFieldsOfKind[kind];
    if (fields != expected) {
      reader_.fail(Errc::malformed, offset,
                   "an entry of kind " + std::to_string(kind) + " has " + std::to_string(fields) +
                       " fields, expected " + std::to_string(expected));
    }
    entry.kind = static_cast<MetaEntry::Kind>(kind);
    read_path(entry.path);
    if (entry.kind == MetaEntry::Kind::value) {
      entry.value = read_value(entry.path.size());
    } else if (entry.kind == MetaEntry::Kind::tensor) {
      read_tensor(entry.tensor);
    }
  }

  void read_path(std::vector<std::string>& path) {
    const std::size_t offset = reader_.offset();
    const std::size_t length = reader_.read_array("a key path");
    if (length == 0) reader_.fail(Errc::malformed, offset, "a key path is empty");
    if (length > limits_.max_depth) {
      reader_.fail(Errc::limit_exceeded, offset,
                   "a key path of " + std::to_string(length) + " keys exceeds max_depth " +
                       std::to_string(limits_.max_depth));
    }
    spend_entries(length, offset);
    path.reserve(length);
    for (std::size_t i = 0; i < length; ++i) path.push_back(reader_.read_str("a key"));
  }

  void read_tensor(TensorMeta& tensor) {
    tensor.device_type = read_code(device_type_from_code, "device type");
    tensor.dtype = read_code(dtype_from_code, "dtype");
    tensor.shape = read_shape(tensor.dtype);
    tensor.sliced = reader_.read_bool("the sliced flag");
  }

  // An enum sent as its wire code; `from_code` knows which codes this build has.
  template <class Enum>
  Enum read_code(std::optional<Enum> (*from_code)(std::uint64_t) noexcept, const char* what) {
    const std::size_t offset = reader_.offset();
    const std::int64_t code = reader_.read_int(what);
    const std::optional<Enum> known =
        code < 0 ? std::nullopt : from_code(static_cast<std::uint64_t>(code));
    if (!known) {
      reader_.fail(Errc::malformed, offset,
                   std::string(what) + " code " + std::to_string(code) + " is unknown");
    }
    return *known;
  }

  Shape read_shape(DType dtype) {
    const std::size_t offset = reader_.offset();
    const std::size_t rank = reader_.read_array("a shape");
    std::int64_t numel = 0;
    return read_shape_body(offset, rank, dtype, numel);
  }

  // read_dims' general way, out of line: the one-byte way stays small where it is inlined.
  [[gnu::noinline]] Shape read_dims_in_general(std::size_t offset, std::size_t rank, DType dtype,
                                               std::int64_t& numel) {
    return read_shape_body(offset, rank, dtype, numel);
  }

  // The `rank` dimensions of a shape that starts at `offset`, checked against the limits;
  // `numel` gets their product.
  Shape read_shape_body(std::size_t offset, std::size_t rank, DType dtype, std::int64_t& numel) {
    if (rank > max_rank()) [[unlikely]] rank_exceeds(offset, rank, max_rank());
    Shape shape;
    numel = 1;
    bool overflow = false;
    for (std::size_t i = 0; i < rank; ++i) {
      const std::size_t dim_offset = reader_.offset();
      const std::int64_t dim = reader_.read_int("a dimension");
      if (dim < 0) [[unlikely]] negative_dimension(dim_offset, dim);
      shape.push_back(dim);
      overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
    }
    std::uint64_t bytes = 0;
    if (overflow ||
        __builtin_mul_overflow(static_cast<std::uint64_t>(numel), dtype_size(dtype), &bytes))
        [[unlikely]]
      payload_exceeds(offset, shape, dtype);
    count_payload(offset, bytes, shape, dtype);
    return shape;
  }

  // The dimensions a shape may have: the limits', and never more than a Shape holds.
  std::size_t max_rank() const noexcept {
    return static_cast<std::size_t>(std::max(0, std::min(limits_.max_rank, Shape::kMaxRank)));
  }
  // Counts a tensor's payload of `bytes` against max_payload_bytes; the error names the tensor
  // whose shape starts at `offset`.
  void count_payload(std::size_t offset, std::uint64_t bytes, const Shape& shape, DType dtype) {
    if (__builtin_add_overflow(payload_bytes_, bytes, &payload_bytes_) ||
        payload_bytes_ > limits_.max_payload_bytes) [[unlikely]]
      payload_exceeds(offset, shape, dtype);
  }
  // read_shape_body's failures, out of line so that their messages are not made in its frame.
  [[noreturn, gnu::cold, gnu::noinline]] void rank_exceeds(std::size_t offset, std::size_t rank,
                                                           std::size_t max_rank) const {
    reader_.fail(Errc::limit_exceeded, offset,
                 "a shape of rank " + std::to_string(rank) + " exceeds max_rank " +
                     std::to_string(max_rank));
  }
  [[noreturn, gnu::cold, gnu::noinline]] void negative_dimension(std::size_t offset,
                                                                 std::int64_t dim) const {
    reader_.fail(Errc::malformed, offset, "dimension " + std::to_string(dim) + " is negative");
  }
  [[noreturn, gnu::cold, gnu::noinline]] void payload_exceeds(std::size_t offset,
                                                              const Shape& shape,
                                                              DType dtype) const {
    reader_.fail(Errc::limit_exceeded, offset,
                 "tensor of shape " + to_string(shape) + " " + to_string(dtype) +
                     " brings the declared payload past max_payload_bytes " +
                     std::to_string(limits_.max_payload_bytes));
  }

  void spend_entries(std::size_t count, std::size_t offset) {
    if (count > limits_.max_entries - entries_) {
      reader_.fail(Errc::limit_exceeded, offset,
                   "more than max_entries " + std::to_string(limits_.max_entries) +
                       " entries, list items and keys in total");
    }
    entries_ += count;
  }

  MsgpackReader reader_;
  const FrameLimits& limits_;
  std::size_t entries_ = 0;
  std::uint64_t payload_bytes_ = 0;
};

}  // namespace rankmesh::detail
