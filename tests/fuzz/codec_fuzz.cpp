// Decodes arbitrary bytes as metadata and as an object. Decoding must give an error or a value;
// a value must re-encode to bytes that decode to an equal value, metadata must survive join()
// (which validates keys) without crashing, and the receive path's shortcut (decode_plain_dict)
// must build what decode and join build, or decline.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "codec.hpp"

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

// decode_plain_dict() (the receive path's shortcut) builds what decode_metadata() then join()
// build, or declines; it never accepts what the full path refuses.
void check_plain_dict(std::span<const std::uint8_t> bytes) {
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
  auto metadata = decode_metadata(bytes);
  if (!metadata.ok()) {
    if (decode_plain_dict(bytes, {}, empty)) std::abort();  // the full path refuses these bytes
    return;
  }
  const std::vector<Tensor> payloads = stand_ins(metadata.value(), false);
  std::optional<TensorDict> plain = decode_plain_dict(bytes, payloads, empty);
  TensorDict joined;
  try {
    joined = join(metadata.value(), stand_ins(metadata.value(), true));
  } catch (const Error&) {
    if (plain) std::abort();  // join refuses it: the shortcut must decline too
    return;
  }
  bool sliced = false;
  for (const MetaEntry& entry : metadata.value().entries) sliced = sliced || entry.tensor.sliced;
  if (plain ? !same_shape(*plain, joined) : !sliced) std::abort();
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
  if (auto object = decode_object(bytes); object.ok()) check_round_trip(object.value(), decode_obj);
  decode_metadata(bytes, kTight);
  decode_object(bytes, kTight);
  return 0;
}
