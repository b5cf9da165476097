#include "codec.hpp"

#include "metadata_coder.hpp"

namespace rankmesh {

using detail::Decoder;
using detail::Encoder;


void encode(const Metadata& metadata, std::vector<std::uint8_t>& out) {
  Encoder(out).write_metadata(metadata);
}

std::vector<std::uint8_t> encode(const Metadata& metadata) {
  std::vector<std::uint8_t> out;
  encode(metadata, out);
  return out;
}

Result<Metadata> decode_metadata(std::span<const std::uint8_t> bytes, const FrameLimits& limits) {
  try {
    return Decoder(bytes, limits, "metadata").read_metadata();
  } catch (const Error& error) {
    return error;
  }
}

void encode(const TensorDict& dict, std::vector<std::uint8_t>& out,
            std::vector<const Tensor*>& tensors) {
  Encoder(out).write_dict(dict, tensors);
}

std::optional<TensorDict> decode_plain_dict(std::span<const std::uint8_t> bytes,
                                            std::span<const Tensor> payloads, const Allocator& empty,
                                            const FrameLimits& limits) {
  try {
    TensorDict dict;
    if (Decoder(bytes, limits, "metadata").read_dict(dict, payloads, empty)) return dict;
  } catch (const Error&) {
    // Not plain, or not well formed: the full path says which.
  }
  return std::nullopt;
}

void encode(const Value& object, std::vector<std::uint8_t>& out) {
  Encoder(out).write_object(object);
}

Result<Value> decode_object(std::span<const std::uint8_t> bytes, const FrameLimits& limits) {
  try {
    return Decoder(bytes, limits, "object").read_object();
  } catch (const Error& error) {
    return error;
  }
}

}  // namespace rankmesh
