// Decodes arbitrary bytes as metadata and as an object. Decoding must give an error or a value;
// a value must re-encode to bytes that decode to an equal value, metadata must survive join()
// (which validates keys) without crashing, and the receive path's shortcuts (decode_plain_dict,
// a schema receiver's read_dict for cached frames) must build what decode and join build, or
// decline.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "codec.hpp"
#include "schema_cache.hpp"

using namespace rankmesh;

namespace {

// Tighter than the defaults, so that every limit is reached by small inputs too.
constexpr FrameLimits kTight{.max_metadata_bytes = 1024,
                             .max_payload_bytes = 4096,
                             .max_depth = 4,
                             .max_entries = 64,
                             .max_rank = 3};

template <class T, class Decode>
void check_round_trip(const T& decoded, Decode decode) {
  std::vector<std::uint8_t> again;
  encode(decoded, again);
  auto redecoded = decode(again);
  if (!redecoded.ok() || !(redecoded.value() == decoded)) std::abort();
  std::vector<std::uint8_t> third;
  encode(redecoded.value(), third);
  if (third != again) std::abort();
}

// join() only checks shapes and dtypes, so stand-in tensors need no real memory.
void check_join(const Metadata& metadata) {
  static std::uint8_t stand_in;
  std::vector<Tensor> tensors;
  for (const MetaEntry& entry : metadata.entries) {
    if (entry.kind != MetaEntry::Kind::tensor) continue;
    const TensorMeta& meta = entry.tensor;
    tensors.push_back(
        Tensor::wrap(&stand_in, meta.shape, meta.dtype, Device{meta.device_type}, nullptr));
  }
  TensorDict joined;
  try {
    joined = join(metadata, std::move(tensors));
  } catch (const Error& error) {
    if (error.code() != Errc::invalid_argument) std::abort();
    return;
  }
  const SplitDict parts = split(joined);
  if (!(join(parts.metadata, parts.tensors) == joined)) std::abort();
}

// Same keys in the same order, same values; tensors by shape and dtype (stand-ins have no bytes).
bool same_shape(const TensorDict& a, const TensorDict& b) {
  if (a.size() != b.size()) return false;
  for (auto x = a.begin(), y = b.begin(); x != a.end(); ++x, ++y) {
    if (x->key != y->key || x->value.v.index() != y->value.v.index()) return false;
    if (const auto* t = std::get_if<Tensor>(&x->value.v)) {
      const Tensor& u = y->value.as<Tensor>();
      if (!(t->shape() == u.shape()) || t->dtype() != u.dtype()) return false;
    } else if (const auto* d = std::get_if<TensorDict>(&x->value.v)) {
      if (!same_shape(*d, y->value.as<TensorDict>())) return false;
    } else if (!(x->value == y->value)) {
      return false;
    }
  }
  return true;
}

// The receive path's shortcut (`fast`: decode_plain_dict, or a schema receiver's read_dict) builds
// what the full path (`full`: decode_metadata, or the receiver's metadata) then join() build, or
// declines where it may; it never accepts what the full path refuses.
template <class Full, class Fast>
void check_fast_path(std::span<const std::uint8_t> bytes, Full full, Fast fast) {
  static std::uint8_t stand_in;
  auto stand_ins = [](const Metadata& metadata, bool with_empty) {
    std::vector<Tensor> tensors;
    for (const MetaEntry& entry : metadata.entries)
      if (entry.kind == MetaEntry::Kind::tensor && (with_empty || entry.tensor.shape.numel() != 0))
        tensors.push_back(Tensor::wrap(&stand_in, entry.tensor.shape, entry.tensor.dtype, Device{}, nullptr));
    return tensors;
  };
  const Allocator empty = [](const Shape& shape, DType dtype) {
    return Tensor::wrap(&stand_in, shape, dtype, Device{}, nullptr);
  };
  auto metadata = full(bytes);
  if (!metadata.ok()) {
    if (fast(bytes, std::span<const Tensor>{}, empty)) std::abort();  // the full path refuses these bytes
    return;
  }
  const std::vector<Tensor> payloads = stand_ins(metadata.value(), false);
  std::optional<TensorDict> plain = fast(bytes, payloads, empty);
  TensorDict joined;
  try {
    joined = join(metadata.value(), stand_ins(metadata.value(), true));
  } catch (const Error&) {
    if (plain) std::abort();  // join refuses it: the shortcut must decline too
    return;
  }
  // What the shortcut leaves to the full path on purpose: slices, and tensors of a device (their
  // payloads travel as host bytes, or not at all when empty: the full path puts them back on
  // their device).
  bool declinable = false;
  for (const MetaEntry& entry : metadata.value().entries)
    declinable = declinable || entry.tensor.sliced ||
                 (entry.kind == MetaEntry::Kind::tensor &&
                  entry.tensor.device_type != DeviceType::cpu);
  if (plain ? !same_shape(*plain, joined) : !declinable) std::abort();
}

void check_plain_dict(std::span<const std::uint8_t> bytes) {
  check_fast_path(bytes, [](auto b) { return decode_metadata(b); },
                  [](auto b, auto payloads, const Allocator& empty) {
                    return decode_plain_dict(b, payloads, empty);
                  });
}

// A cached frame (schema_cache.hpp), taken in by a receiver that holds a definition in slot 0
// (so that uses of it reach the instance reader) and perhaps defines another itself.
void check_cached_frame(std::span<const std::uint8_t> bytes) {
  static std::uint8_t stand_in;
  auto t = [](Shape shape, DType dtype) { return Tensor::wrap(&stand_in, shape, dtype, Device{}, nullptr); };
  SchemaReceiver receiver;
  SchemaSender sender;
  std::vector<std::uint8_t> definition;
  const TensorDict defined{{"x", t({2, 1}, DType::f16)}, {"n", 1}, {"e", TensorDict{}},
                          {"inner", TensorDict{{"y", t({1}, DType::u8)}}}};
  std::vector<const Tensor*> tensors;
  sender.encode(defined, definition, tensors);
  receiver.take_in(definition);
  receiver.take_in(bytes);
  check_fast_path(bytes, [&](auto b) { return receiver.metadata(b); },
                  [&](auto b, auto payloads, const Allocator& empty) {
                    return receiver.read_dict(b, payloads, empty);
                  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  auto decode_meta = [](std::span<const std::uint8_t> b) { return decode_metadata(b); };
  auto decode_obj = [](std::span<const std::uint8_t> b) { return decode_object(b); };

  if (auto metadata = decode_metadata(bytes); metadata.ok()) {
    check_round_trip(metadata.value(), decode_meta);
    check_join(metadata.value());
  }
  check_plain_dict(bytes);
  check_cached_frame(bytes);
  if (auto object = decode_object(bytes); object.ok()) check_round_trip(object.value(), decode_obj);
  decode_metadata(bytes, kTight);
  decode_object(bytes, kTight);
  return 0;
}
