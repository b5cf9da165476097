// Parses arbitrary bytes as the prefix of a frame as the shm receiver reads it from its ring
// (frame_codec.hpp's format, lent payloads allowed): the header, then the descriptors that follow
// it. Parsing must end in a frame's description or in a message saying what is wrong, never crash
// or read past the bytes it was given; a header that parses keeps every limit, and everything
// that parses writes back to exactly the bytes it came from (one encoding per frame).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "frame_codec.hpp"

using namespace rankmesh;

namespace {

// Tighter than a channel's, so that every limit is reached by small inputs too.
constexpr FrameLimits kTight{.max_metadata_bytes = 4096, .max_tensors = 16, .max_payload_bytes = 1 << 20};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < kFrameHeaderBytes) return 0;
  // The frame's own link sequence is the expected one: a header is otherwise judged on its
  // merits. Any other expected sequence must be refused.
  std::uint64_t link_seq = 0;
  for (int i = 7; i >= 0; --i) link_seq = link_seq << 8 | data[8 + i];
  WireHeader header;
  if (!parse_frame_header(data, link_seq + 1, kTight, header)) std::abort();
  if (parse_frame_header(data, link_seq, kTight, header)) return 0;
  if (header.tensors > kTight.max_tensors || header.metadata_bytes > kTight.max_metadata_bytes ||
      header.payload_bytes > kTight.max_payload_bytes)
    std::abort();

  // The descriptors, exactly as many bytes as the header announces: one past them would be an
  // overread that AddressSanitizer reports.
  const std::size_t descriptor_bytes = std::size_t{header.tensors} * kDescriptorBytes;
  if (size - kFrameHeaderBytes < descriptor_bytes) return 0;
  const std::vector<std::uint8_t> descriptors(data + kFrameHeaderBytes,
                                              data + kFrameHeaderBytes + descriptor_bytes);
  std::uint64_t payload = 0;
  static std::uint8_t nowhere;
  for (std::size_t i = 0; i < header.tensors; ++i) {
    TensorDescriptor d;
    if (parse_descriptor(descriptors.data() + i * kDescriptorBytes, i, d)) return 0;
    if (d.shape.rank() > Shape::kMaxRank || d.device.type != DeviceType::cpu) std::abort();
    if (d.nbytes > header.payload_bytes - payload) return 0;  // the receiver refuses it
    payload += d.nbytes;
    if (d.nbytes != static_cast<std::uint64_t>(d.shape.numel()) * dtype_size(d.dtype)) std::abort();
    // A tensor of that description writes back the same descriptor (no memory behind it).
    const Tensor tensor = Tensor::wrap(&nowhere, d.shape, d.dtype, d.device, [](void*) {});
    std::uint8_t descriptor[kDescriptorBytes];
    write_descriptor(descriptor, tensor, d.lent);
    if (std::memcmp(descriptor, descriptors.data() + i * kDescriptorBytes, sizeof descriptor) != 0)
      std::abort();
  }
  return 0;
}
