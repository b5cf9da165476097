#include "frame_codec.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <utility>

#include "channel.hpp"
#include "rankmesh/event.hpp"
#include "received_payloads.hpp"

namespace rankmesh {
namespace {

static_assert(kFrameHeaderBytes <= kDescriptorBytes, "the decoder's scratch holds a header");

// The wire is little-endian. One unaligned load or store each (GCC did not merge the byte loop
// these replace: a descriptor's nine words cost ~500 instructions per tensor and message).
template <class U>
U little_endian(U bits) noexcept {
  if constexpr (std::endian::native == std::endian::big && sizeof(U) > 1) {
    if constexpr (sizeof(U) == 2) return __builtin_bswap16(bits);
    if constexpr (sizeof(U) == 4) return __builtin_bswap32(bits);
    if constexpr (sizeof(U) == 8) return __builtin_bswap64(bits);
  }
  return bits;
}

template <class T>
void put(std::uint8_t*& out, T value) {
  using U = std::make_unsigned_t<T>;
  const U bits = little_endian(static_cast<U>(value));
  std::memcpy(out, &bits, sizeof bits);
  out += sizeof bits;
}

template <class T>
T get(const std::uint8_t*& in) {
  using U = std::make_unsigned_t<T>;
  U bits;
  std::memcpy(&bits, in, sizeof bits);
  in += sizeof bits;
  return static_cast<T>(little_endian(bits));
}

std::string hex(std::uint64_t value) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  do {
    out.insert(out.begin(), digits[value & 15]);
    value >>= 4;
  } while (value != 0);
  return "0x" + out;
}

std::string describe(const Frame& frame) {
  return "frame (group " + std::to_string(frame.header.group) + ", op " +
         std::to_string(frame.header.op) + ", seq " + std::to_string(frame.header.seq) + ")";
}

}  // namespace

WireError parse_frame_header(const std::uint8_t* bytes, std::uint64_t expected_seq,
                             const FrameLimits& limits, WireHeader& header) {
  const std::uint8_t* in = bytes;
  const auto magic = get<std::uint32_t>(in);
  const auto version = get<std::uint16_t>(in);
  const auto flags = get<std::uint16_t>(in);
  header.link_seq = get<std::uint64_t>(in);
  header.frame.group = get<std::uint32_t>(in);
  header.frame.op = get<std::uint32_t>(in);
  header.frame.seq = get<std::uint64_t>(in);
  header.frame.src = get<std::int32_t>(in);
  header.metadata_bytes = get<std::uint32_t>(in);
  header.tensors = get<std::uint32_t>(in);
  header.payload_bytes = get<std::uint64_t>(in);

  if (magic != kFrameMagic)
    return {Errc::malformed, "bad magic " + hex(magic) + " (a rankmesh frame starts with 'RMSH' = " +
                                 hex(kFrameMagic) + "): not a rankmesh peer, or the stream lost its place"};
  if (version != kFrameVersion)
    return {Errc::malformed, "frame format version " + std::to_string(version) +
                                 " is not supported (this build speaks version " +
                                 std::to_string(kFrameVersion) + ")"};
  if (flags != 0) return {Errc::malformed, "unknown frame flags " + hex(flags)};
  if (header.link_seq != expected_seq)
    return {Errc::malformed, "out of sequence: the frame carries link sequence number " +
                                 std::to_string(header.link_seq) + " where " +
                                 std::to_string(expected_seq) +
                                 " was expected (a frame was lost, repeated or reordered)"};
  if (header.metadata_bytes > limits.max_metadata_bytes)
    return {Errc::limit_exceeded, "metadata of " + std::to_string(header.metadata_bytes) +
                                      " bytes exceeds the limit of " +
                                      std::to_string(limits.max_metadata_bytes)};
  if (header.tensors > limits.max_tensors)
    return {Errc::limit_exceeded, std::to_string(header.tensors) + " tensors exceed the limit of " +
                                      std::to_string(limits.max_tensors)};
  if (header.payload_bytes > limits.max_payload_bytes)
    return {Errc::limit_exceeded, "a payload of " + std::to_string(header.payload_bytes) +
                                      " bytes exceeds the limit of " +
                                      std::to_string(limits.max_payload_bytes)};
  return {};
}

namespace {

// What is wrong with the first 8 bytes of descriptor `index` (dtype, device, payload kind, rank,
// padding), which parse_descriptor found not to be a plain host tensor's. Out of line: only a
// bad frame gets here.
[[gnu::cold, gnu::noinline]] WireError descriptor_error(const std::uint8_t* bytes,
                                                        std::size_t index) {
  const auto which = [index] { return "tensor " + std::to_string(index); };
  const std::optional<DType> dtype = dtype_from_code(bytes[0]);
  if (!dtype)
    return {Errc::malformed, which() + " has dtype code " + std::to_string(bytes[0]) +
                                 ", which is not a known dtype"};
  const std::optional<DeviceType> device = device_type_from_code(bytes[1]);
  if (!device)
    return {Errc::malformed, which() + " has device type code " + std::to_string(bytes[1]) +
                                 ", which is not a known device type"};
  if (*device != DeviceType::cpu)
    return {Errc::malformed, which() + " is described as a " + to_string(*device) +
                                 " tensor; frames carry host tensors only"};
  if (bytes[2] != 0)
    return {Errc::malformed, which() + " is described as cpu:" + std::to_string(bytes[2]) +
                                 "; the host is cpu:0"};
  if (bytes[3] > 1)
    return {Errc::malformed, which() + " has payload kind " + std::to_string(bytes[3]) +
                                 " (0: inline, 1: lent)"};
  if (bytes[4] > Shape::kMaxRank)
    return {Errc::malformed, which() + " has " + std::to_string(bytes[4]) +
                                 " dimensions (at most " + std::to_string(Shape::kMaxRank) + ")"};
  return {Errc::malformed, which() + " has a malformed descriptor (padding not zero)"};
}

}  // namespace

WireError parse_descriptor(const std::uint8_t* bytes, std::size_t index, TensorDescriptor& out) {
  // Named only in an error: every message parses its descriptors.
  const auto which = [index] { return "tensor " + std::to_string(index); };
  // A known dtype, a host tensor of cpu:0, inline or lent, a rank that fits, zero padding: one
  // test for what every descriptor of a good frame is.
  const int rank = bytes[4];
  if (bytes[0] >= kDTypeCount || bytes[1] != static_cast<std::uint8_t>(DeviceType::cpu) ||
      bytes[2] != 0 || bytes[3] > 1 || rank > Shape::kMaxRank ||
      (bytes[5] | bytes[6] | bytes[7]) != 0) [[unlikely]]
    return descriptor_error(bytes, index);
  out.dtype = static_cast<DType>(bytes[0]);
  out.device = Device{};
  out.lent = bytes[3] == 1;
  out.shape = Shape{};
  const std::uint8_t* in = bytes + 8;
  std::int64_t numel = 1;  // counted as Shape::numel counts: a product that overflows is refused
  for (int d = 0; d < rank; ++d) {
    const auto dim = get<std::int64_t>(in);
    if (dim < 0)
      return {Errc::malformed, which() + " has a negative dimension " + std::to_string(dim)};
    out.shape.push_back(dim);
    if (__builtin_mul_overflow(numel, dim, &numel))
      return {Errc::malformed, which() + " of shape " + to_string(out.shape) +
                                   " has more elements than 64 bits count"};
  }
  std::uint64_t beyond_rank = 0;  // the unused dimensions, all zero
  for (int d = rank; d < Shape::kMaxRank; ++d) beyond_rank |= get<std::uint64_t>(in);
  if (beyond_rank != 0)
    return {Errc::malformed, which() + " has a malformed descriptor (a dimension beyond its rank)"};
  // More bytes than 64 bits count need more than any payload length: the caller says so.
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(numel),
                             static_cast<std::uint64_t>(dtype_size(out.dtype)), &out.nbytes))
    out.nbytes = std::numeric_limits<std::uint64_t>::max();
  return {};
}

void write_descriptor(std::uint8_t* out, const Tensor& tensor, bool lent) noexcept {
  std::memset(out, 0, kDescriptorBytes);
  out[0] = static_cast<std::uint8_t>(tensor.dtype());
  out[1] = static_cast<std::uint8_t>(tensor.device().type);
  out[2] = static_cast<std::uint8_t>(tensor.device().index);
  out[3] = lent ? 1 : 0;
  out[4] = static_cast<std::uint8_t>(tensor.shape().rank());
  std::uint8_t* dims = out + 8;
  for (std::int64_t dim : tensor.shape()) put(dims, dim);
}

LentPayload read_lent_payload(const std::uint8_t* bytes) noexcept {
  const std::uint8_t* in = bytes;
  LentPayload lent;
  lent.address = get<std::uint64_t>(in);
  lent.length = get<std::uint64_t>(in);
  return lent;
}

void check_frame_limits(const Frame& frame, const FrameLimits& limits) {
  if (frame.metadata.size() > limits.max_metadata_bytes)
    throw Error(Errc::limit_exceeded, describe(frame) + ": metadata of " +
                                          std::to_string(frame.metadata.size()) +
                                          " bytes exceeds the limit of " +
                                          std::to_string(limits.max_metadata_bytes));
  if (frame.tensors.size() > limits.max_tensors)
    throw Error(Errc::limit_exceeded, describe(frame) + ": " + std::to_string(frame.tensors.size()) +
                                          " tensors exceed the limit of " +
                                          std::to_string(limits.max_tensors));
  std::uint64_t payload = 0;
  for (const Tensor& tensor : frame.tensors) payload += tensor.defined() ? tensor.nbytes() : 0;
  if (payload > limits.max_payload_bytes)
    throw Error(Errc::limit_exceeded, describe(frame) + ": payload of " + std::to_string(payload) +
                                          " bytes exceeds the limit of " +
                                          std::to_string(limits.max_payload_bytes));
}

void wait_payloads_ready(const Frame& frame, Deadline deadline, bool except_chunked) {
  for (std::size_t i = 0; i < frame.tensors.size(); ++i) {
    const std::shared_ptr<Event>& event = frame.tensors[i].ready_event();
    if (!event) continue;
    if (except_chunked && std::any_of(frame.chunked.begin(), frame.chunked.end(),
                                      [&](const ChunkedPayload& c) { return c.is(frame.tensors[i]); }))
      continue;
    if (!event->query()) {
      const auto left = std::max(Clock::duration::zero(), deadline - Clock::now());
      if (!event->wait_for(left))
        throw ChannelTimeout(describe(frame) + ": tensor " + std::to_string(i) +
                             " was not ready before the deadline (its " + event->describe() +
                             " did not complete)");
    }
    if (std::exception_ptr error = event->error()) std::rethrow_exception(error);
  }
}

std::span<const iovec> FrameEncoder::encode(const Frame& frame, std::uint64_t link_seq,
                                           std::size_t lend_above) {
  if (frame.metadata.size() > std::numeric_limits<std::uint32_t>::max())
    throw Error(Errc::invalid_argument, describe(frame) + ": metadata of " +
                                            std::to_string(frame.metadata.size()) +
                                            " bytes does not fit a frame");
  if (frame.tensors.size() > std::numeric_limits<std::uint32_t>::max())
    throw Error(Errc::invalid_argument, describe(frame) + ": too many tensors for a frame");

  const std::size_t count = frame.tensors.size();
  std::uint64_t payload = 0;
  std::size_t wire_payload = 0;
  lent_.assign(count, 0);
  lent_bytes_ = 0;
  std::size_t lent_count = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const Tensor& tensor = frame.tensors[i];
    if (!tensor.defined())
      throw Error(Errc::invalid_argument,
                  describe(frame) + ": tensor " + std::to_string(i) + " is undefined");
    if (tensor.device().type != DeviceType::cpu)
      throw Error(Errc::invalid_argument, describe(frame) + ": tensor " + std::to_string(i) +
                                              " is on " + to_string(tensor.device()) +
                                              "; byte transports carry host tensors only");
    const std::size_t nbytes = tensor.nbytes();
    payload += nbytes;
    if (nbytes > lend_above) {
      lent_[i] = 1;
      ++lent_count;
      lent_bytes_ += nbytes;
      wire_payload += kLentPayloadBytes;
    } else {
      wire_payload += nbytes;
    }
  }

  const std::size_t head_bytes = kFrameHeaderBytes + count * kDescriptorBytes;
  // The lent payloads' addresses follow the descriptors in the same buffer (sized once, so that
  // the spans into it stay valid).
  head_.resize(head_bytes + kLentPayloadBytes * lent_count);
  std::uint8_t* out = head_.data();
  put(out, kFrameMagic);
  put(out, kFrameVersion);
  put(out, std::uint16_t{0});
  put(out, link_seq);
  put(out, frame.header.group);
  put(out, frame.header.op);
  put(out, frame.header.seq);
  put(out, frame.header.src);
  put(out, static_cast<std::uint32_t>(frame.metadata.size()));
  put(out, static_cast<std::uint32_t>(count));
  put(out, payload);
  for (std::size_t i = 0; i < count; ++i, out += kDescriptorBytes)
    write_descriptor(out, frame.tensors[i], lent_[i] != 0);

  spans_.clear();
  spans_.push_back(iovec{head_.data(), head_bytes});
  if (!frame.metadata.empty())
    spans_.push_back(
        iovec{const_cast<std::uint8_t*>(frame.metadata.data()), frame.metadata.size()});
  for (std::size_t i = 0; i < count; ++i) {
    const Tensor& tensor = frame.tensors[i];
    if (lent_[i] != 0) {
      std::uint8_t* address = out;
      put(out, static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(tensor.data())));
      put(out, static_cast<std::uint64_t>(tensor.nbytes()));
      spans_.push_back(iovec{address, kLentPayloadBytes});
    } else if (std::size_t n = tensor.nbytes(); n != 0) {
      spans_.push_back(iovec{tensor.data(), n});
    }
  }
  prefix_ = head_bytes + frame.metadata.size();
  size_ = prefix_ + wire_payload;
  return spans_;
}

FrameDecoder::FrameDecoder(Allocator allocate, FrameLimits limits)
    : allocate_(std::move(allocate)), limits_(limits) {
  if (!allocate_) allocate_ = [](const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype); };
}

bool FrameDecoder::mid_frame() const noexcept {
  switch (phase_) {
    case Phase::header: return filled_ != 0;
    case Phase::ready: return false;
    default: return true;
  }
}

void FrameDecoder::fail(Errc code, const std::string& what) {
  phase_ = Phase::failed;
  error_code_ = code;
  error_ = "frame " + std::to_string(expected_seq_) + " on this link: " + what;
  throw Error(error_code_, error_);
}

void FrameDecoder::expect(Phase phase, std::size_t bytes) {
  phase_ = phase;
  want_ = bytes;
  filled_ = 0;
}

std::span<std::uint8_t> FrameDecoder::next_buffer() {
  switch (phase_) {
    case Phase::header:
    case Phase::descriptor: return {scratch_.data() + filled_, want_ - filled_};
    case Phase::metadata: return {metadata_.data() + filled_, want_ - filled_};
    case Phase::payload:
      if (landed_.withdrawn()) divert();
      return {tensors_[current_].data_as<std::uint8_t>() + filled_, want_ - filled_};
    case Phase::ready: return {};
    case Phase::failed: break;
  }
  throw Error(error_code_, error_);
}

void FrameDecoder::commit(std::size_t n) {
  if (phase_ == Phase::failed) throw Error(error_code_, error_);
  if (n > want_ - filled_)
    throw Error(Errc::invalid_argument, "FrameDecoder::commit: " + std::to_string(n) +
                                            " bytes committed where " +
                                            std::to_string(want_ - filled_) + " were asked for");
  filled_ += n;
  if (filled_ == want_ && phase_ != Phase::ready) finish_part();
}

std::size_t FrameDecoder::feed(std::span<const std::uint8_t> bytes) {
  std::size_t taken = 0;
  while (taken < bytes.size() && !ready()) {
    std::span<std::uint8_t> into = next_buffer();
    const std::size_t n = std::min(into.size(), bytes.size() - taken);
    std::memcpy(into.data(), bytes.data() + taken, n);
    taken += n;
    commit(n);
  }
  return taken;
}

void FrameDecoder::take(Frame& frame) {
  if (phase_ != Phase::ready)
    throw Error(Errc::invalid_argument, "FrameDecoder::take: no whole frame has arrived");
  frame.header = header_.frame;
  frame.metadata.swap(metadata_);
  frame.tensors.swap(tensors_);
  tensors_.clear();
  ++expected_seq_;
  expect(Phase::header, kFrameHeaderBytes);
}

void FrameDecoder::finish_part() {
  switch (phase_) {
    case Phase::header: parse_header(); break;
    case Phase::descriptor: parse_descriptor(); break;
    case Phase::metadata: start_payloads(); break;
    case Phase::payload: next_payload(current_ + 1); break;
    case Phase::ready:
    case Phase::failed: break;
  }
}

void FrameDecoder::parse_header() {
  if (WireError error = parse_frame_header(scratch_.data(), expected_seq_, limits_, header_))
    fail(error.code, error.what);
  descriptors_.clear();
  tensors_.clear();
  landed_.start(0);
  described_bytes_ = 0;
  current_ = 0;
  if (header_.tensors == 0) {
    after_descriptors();
  } else {
    expect(Phase::descriptor, kDescriptorBytes);
  }
}

std::string FrameDecoder::which() const { return "tensor " + std::to_string(current_); }

void FrameDecoder::parse_descriptor() {
  TensorDescriptor& desc = descriptors_.emplace_back();
  if (WireError error = rankmesh::parse_descriptor(scratch_.data(), current_, desc))
    fail(error.code, error.what);
  if (desc.lent)
    fail(Errc::malformed, which() + " is lent (an address in the sender): a byte stream carries "
                                    "payloads inline only");
  if (__builtin_add_overflow(described_bytes_, desc.nbytes, &described_bytes_) ||
      described_bytes_ > header_.payload_bytes)
    fail(Errc::malformed, "the tensors described up to " + which() + " (shape " +
                              to_string(desc.shape) + ", " + to_string(desc.dtype) +
                              ") need more than the header's payload length of " +
                              std::to_string(header_.payload_bytes) + " bytes");
  if (++current_ < header_.tensors) {
    expect(Phase::descriptor, kDescriptorBytes);
  } else {
    after_descriptors();
  }
}

void FrameDecoder::after_descriptors() {
  if (described_bytes_ != header_.payload_bytes)
    fail(Errc::malformed, "the header's payload length is " + std::to_string(header_.payload_bytes) +
                              " bytes but its tensors need " + std::to_string(described_bytes_));
  metadata_.resize(header_.metadata_bytes);
  if (header_.metadata_bytes != 0) {
    expect(Phase::metadata, header_.metadata_bytes);
  } else {
    start_payloads();
  }
}

void FrameDecoder::start_payloads() {
  // Memory for every payload before the first payload byte is read.
  try {
    landed_.start(
        allocate_received_payloads(header_.frame, descriptors_, landing_, allocate_, tensors_));
  } catch (const Error& error) {
    fail(error.code(), error.what());
  } catch (const std::exception& error) {
    fail(Errc::limit_exceeded, std::string("cannot allocate the frame's tensors: ") + error.what());
  }
  next_payload(0);
}

void FrameDecoder::land(const Landing* landing) noexcept {
  landed_.land(landing, phase_ == Phase::payload, current_, header_.frame, descriptors_, tensors_);
  landing_ = landing;
}

void FrameDecoder::divert() {
  try {
    landed_.divert(descriptors_, allocate_, tensors_, current_, filled_);
  } catch (const Error& error) {  // the allocator's failures come as Errors naming the tensor
    fail(error.code(), error.what());
  }
}

void FrameDecoder::next_payload(std::size_t from) {
  for (std::size_t i = from; i < descriptors_.size(); ++i) {
    if (descriptors_[i].nbytes != 0) {
      current_ = i;
      expect(Phase::payload, static_cast<std::size_t>(descriptors_[i].nbytes));
      return;
    }
  }
  expect(Phase::ready, 0);
}

}  // namespace rankmesh
