// Decodes arbitrary bytes as metadata and as an object. Decoding must give an error or a value;
// a value must re-encode to bytes that decode to an equal value, and metadata must survive
// join() (which validates keys) without crashing.
#include <cstdint>
#include <cstdlib>
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  auto decode_meta = [](std::span<const std::uint8_t> b) { return decode_metadata(b); };
  auto decode_obj = [](std::span<const std::uint8_t> b) { return decode_object(b); };

  if (auto metadata = decode_metadata(bytes); metadata.ok()) {
    check_round_trip(metadata.value(), decode_meta);
    check_join(metadata.value());
  }
  if (auto object = decode_object(bytes); object.ok()) check_round_trip(object.value(), decode_obj);
  decode_metadata(bytes, kTight);
  decode_object(bytes, kTight);
  return 0;
}
