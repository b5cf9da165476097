// Parses arbitrary bytes as a shm channel record prefix (shm_record.hpp): the header, then the
// descriptors that follow it. Parsing must end in a record or in a message saying what is
// wrong, never crash or read past the bytes it was given; a record that parses must keep every
// limit, describe exactly the body it claims, and write back to exactly the bytes it came from
// (the format has one encoding per record).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "shm/shm_record.hpp"

using namespace rankmesh;

namespace {

// Tighter than a channel's, so that every limit is reached by small inputs too.
constexpr shm_record::Limits kTight{.max_tensors = 16, .max_metadata_bytes = 4096,
                                    .max_payload_bytes = 1 << 20, .max_prefix_bytes = 64 << 10};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < shm_record::kHeaderBytes) return 0;
  // The record's own link sequence is the expected one: a header is otherwise judged on its
  // merits. Any other expected sequence must be refused.
  std::uint64_t link_seq = 0;
  std::memcpy(&link_seq, data + 8, sizeof link_seq);
  shm_record::Header header;
  if (shm_record::parse_header(data, link_seq + 1, kTight, header).empty()) std::abort();
  if (!shm_record::parse_header(data, link_seq, kTight, header).empty()) return 0;
  if (header.tensors > kTight.max_tensors || header.metadata_bytes > kTight.max_metadata_bytes ||
      header.prefix_bytes() > kTight.max_prefix_bytes)
    std::abort();
  std::uint8_t rewritten[shm_record::kHeaderBytes];
  shm_record::write_header(rewritten, header);
  if (std::memcmp(rewritten, data, sizeof rewritten) != 0) std::abort();

  // The descriptors, exactly as many bytes as the header announces: one past them would be an
  // overread that AddressSanitizer reports.
  const std::size_t descriptor_bytes = std::size_t{header.tensors} * shm_record::kDescriptorBytes;
  if (size - shm_record::kHeaderBytes < descriptor_bytes) return 0;
  const std::vector<std::uint8_t> descriptors(data + shm_record::kHeaderBytes,
                                              data + shm_record::kHeaderBytes + descriptor_bytes);
  std::vector<shm_record::Described> described;
  if (!shm_record::parse_descriptors(descriptors.data(), header, kTight, described).empty()) return 0;
  if (described.size() != header.tensors) std::abort();
  std::uint64_t body = 0, payload = 0;
  static std::uint8_t nowhere;
  for (std::size_t i = 0; i < described.size(); ++i) {
    const shm_record::Described& d = described[i];
    if (d.shape.rank() > Shape::kMaxRank ||
        d.nbytes != static_cast<std::uint64_t>(d.shape.numel()) * dtype_size(d.dtype))
      std::abort();
    payload += d.nbytes;
    body += d.by_reference ? shm_record::kReferenceBytes : d.nbytes;
    // A tensor of that description writes back the same descriptor (no memory behind it).
    const Tensor tensor = Tensor::wrap(&nowhere, d.shape, d.dtype, Device{}, [](void*) {});
    std::uint8_t descriptor[shm_record::kDescriptorBytes];
    shm_record::write_descriptor(descriptor, tensor, d.by_reference);
    if (std::memcmp(descriptor, descriptors.data() + i * shm_record::kDescriptorBytes,
                    sizeof descriptor) != 0)
      std::abort();
  }
  if (payload > kTight.max_payload_bytes || body != header.body_bytes) std::abort();
  return 0;
}
