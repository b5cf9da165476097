#include "shm/shm_record.hpp"

#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace rankmesh::shm_record {
namespace {

template <class T>
void put(std::uint8_t* out, std::size_t offset, T value) noexcept {
  std::memcpy(out + offset, &value, sizeof value);
}
template <class T>
T get(const std::uint8_t* in, std::size_t offset) noexcept {
  T value;
  std::memcpy(&value, in + offset, sizeof value);
  return value;
}

}  // namespace

std::string parse_header(const std::uint8_t* bytes, std::uint64_t expected_seq,
                         const Limits& limits, Header& header) {
  const auto magic = get<std::uint32_t>(bytes, 0);
  header.tensors = get<std::uint32_t>(bytes, 4);
  header.link_seq = get<std::uint64_t>(bytes, 8);
  header.frame.group = get<std::uint32_t>(bytes, 16);
  header.frame.op = get<std::uint32_t>(bytes, 20);
  header.frame.seq = get<std::uint64_t>(bytes, 24);
  header.frame.src = get<std::int32_t>(bytes, 32);
  header.metadata_bytes = get<std::uint32_t>(bytes, 36);
  header.body_bytes = get<std::uint64_t>(bytes, 40);
  if (magic != kMagic) {
    char text[16];
    std::snprintf(text, sizeof text, "%08x", static_cast<unsigned>(magic));
    return std::string("no frame (magic 0x") + text + ")";
  }
  auto frame = [&] { return "frame " + std::to_string(header.link_seq); };  // only on error
  if (header.link_seq != expected_seq)
    return "frame with link sequence " + std::to_string(header.link_seq) + " where " +
           std::to_string(expected_seq) + " was expected";
  if (header.tensors > limits.max_tensors)
    return frame() + " has " + std::to_string(header.tensors) + " tensors, beyond the limit of " +
           std::to_string(limits.max_tensors);
  if (header.metadata_bytes > limits.max_metadata_bytes)
    return frame() + " has " + std::to_string(header.metadata_bytes) +
           " metadata bytes, beyond the limit of " + std::to_string(limits.max_metadata_bytes);
  if (header.prefix_bytes() > limits.max_prefix_bytes)
    return frame() + " claims a header of " + std::to_string(header.prefix_bytes()) +
           " bytes, beyond the ring of " + std::to_string(limits.max_prefix_bytes);
  return {};
}

std::string parse_descriptors(const std::uint8_t* bytes, const Header& header,
                              const Limits& limits, std::vector<Described>& described) {
  described.clear();
  std::uint64_t body = 0;
  std::uint64_t payload = 0;
  for (std::uint32_t i = 0; i < header.tensors; ++i) {
    const std::uint8_t* d = bytes + std::size_t{i} * kDescriptorBytes;
    auto which = [&] {
      return "frame " + std::to_string(header.link_seq) + " tensor " + std::to_string(i);
    };
    const auto dtype = dtype_from_code(d[0]);
    if (!dtype) return which() + " has unknown dtype code " + std::to_string(d[0]);
    if (d[1] != static_cast<std::uint8_t>(DeviceType::cpu))
      return which() + " is not a host tensor (device code " + std::to_string(d[1]) + ")";
    if (d[2] > Shape::kMaxRank) return which() + " has rank " + std::to_string(d[2]);
    bool malformed = d[3] > 1 || get<std::uint32_t>(d, 4) != 0;
    for (std::size_t k = d[2]; k < Shape::kMaxRank; ++k)  // dimensions beyond its rank are 0
      malformed = malformed || get<std::int64_t>(d, 8 + 8 * k) != 0;
    if (malformed) return which() + " has a malformed descriptor";
    Described tensor;
    tensor.dtype = *dtype;
    tensor.by_reference = d[3] == 1;
    try {
      for (int k = 0; k < d[2]; ++k)
        tensor.shape.push_back(get<std::int64_t>(d, 8 + 8 * static_cast<std::size_t>(k)));
      tensor.nbytes = static_cast<std::uint64_t>(tensor.shape.numel());
      if (__builtin_mul_overflow(tensor.nbytes, dtype_size(*dtype), &tensor.nbytes))
        throw std::overflow_error("");
    } catch (const std::exception&) {
      return which() + " has an impossible shape";
    }
    if (tensor.nbytes > limits.max_payload_bytes - payload)
      return "frame " + std::to_string(header.link_seq) + " carries more than " +
             std::to_string(limits.max_payload_bytes) + " payload bytes";
    payload += tensor.nbytes;
    body += tensor.by_reference ? kReferenceBytes : tensor.nbytes;
    described.push_back(tensor);
  }
  if (body != header.body_bytes)
    return "frame " + std::to_string(header.link_seq) + " claims a body of " +
           std::to_string(header.body_bytes) + " bytes where its descriptors describe " +
           std::to_string(body);
  return {};
}

void write_header(std::uint8_t* out, const Header& header) noexcept {
  put<std::uint32_t>(out, 0, kMagic);
  put<std::uint32_t>(out, 4, header.tensors);
  put<std::uint64_t>(out, 8, header.link_seq);
  put<std::uint32_t>(out, 16, header.frame.group);
  put<std::uint32_t>(out, 20, header.frame.op);
  put<std::uint64_t>(out, 24, header.frame.seq);
  put<std::int32_t>(out, 32, header.frame.src);
  put<std::uint32_t>(out, 36, header.metadata_bytes);
  put<std::uint64_t>(out, 40, header.body_bytes);
}

void write_descriptor(std::uint8_t* out, const Tensor& tensor, bool by_reference) noexcept {
  std::memset(out, 0, kDescriptorBytes);
  out[0] = static_cast<std::uint8_t>(tensor.dtype());
  out[1] = static_cast<std::uint8_t>(tensor.device().type);
  out[2] = static_cast<std::uint8_t>(tensor.shape().rank());
  out[3] = by_reference ? 1 : 0;
  for (int k = 0; k < tensor.shape().rank(); ++k)
    put<std::int64_t>(out, 8 + 8 * static_cast<std::size_t>(k), tensor.shape()[k]);
}

void write_reference(std::uint8_t* out, const Reference& reference) noexcept {
  put(out, 0, reference.address);
  put(out, 8, reference.length);
}

Reference read_reference(const std::uint8_t* in) noexcept {
  return Reference{get<std::uint64_t>(in, 0), get<std::uint64_t>(in, 8)};
}

}  // namespace rankmesh::shm_record
