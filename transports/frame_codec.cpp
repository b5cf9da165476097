#include "frame_codec.hpp"

#include <algorithm>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <utility>

#include "rankmesh/event.hpp"

namespace rankmesh {
namespace {

static_assert(kFrameHeaderBytes <= 8 * Shape::kMaxRank, "the decoder's scratch holds a header");

template <class T>
void put(std::uint8_t*& out, T value) {
  using U = std::make_unsigned_t<T>;
  auto bits = static_cast<U>(value);
  for (std::size_t i = 0; i < sizeof(U); ++i) *out++ = static_cast<std::uint8_t>(bits >> (8 * i));
}

template <class T>
T get(const std::uint8_t*& in) {
  using U = std::make_unsigned_t<T>;
  U bits = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) bits |= static_cast<U>(static_cast<U>(in[i]) << (8 * i));
  in += sizeof(U);
  return static_cast<T>(bits);
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

std::size_t descriptor_bytes(const Tensor& tensor) {
  return 3 + 8 * static_cast<std::size_t>(tensor.shape().rank());
}

}  // namespace

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

void wait_payloads_ready(const Frame& frame, Deadline deadline) {
  for (std::size_t i = 0; i < frame.tensors.size(); ++i) {
    const std::shared_ptr<Event>& event = frame.tensors[i].ready_event();
    if (!event) continue;
    if (!event->query()) {
      const auto left = std::max(Clock::duration::zero(), deadline - Clock::now());
      if (!event->wait_for(left))
        throw Error(Errc::timeout, describe(frame) + ": tensor " + std::to_string(i) +
                                       " was not ready before the deadline (its " +
                                       event->describe() + " did not complete)");
    }
    if (std::exception_ptr error = event->error()) std::rethrow_exception(error);
  }
}

std::span<const iovec> FrameEncoder::encode(const Frame& frame, std::uint64_t link_seq) {
  if (frame.metadata.size() > std::numeric_limits<std::uint32_t>::max())
    throw Error(Errc::invalid_argument, describe(frame) + ": metadata of " +
                                            std::to_string(frame.metadata.size()) +
                                            " bytes does not fit a frame");
  if (frame.tensors.size() > std::numeric_limits<std::uint32_t>::max())
    throw Error(Errc::invalid_argument, describe(frame) + ": too many tensors for a frame");

  std::size_t head_bytes = kFrameHeaderBytes;
  std::uint64_t payload = 0;
  for (std::size_t i = 0; i < frame.tensors.size(); ++i) {
    const Tensor& tensor = frame.tensors[i];
    if (!tensor.defined())
      throw Error(Errc::invalid_argument,
                  describe(frame) + ": tensor " + std::to_string(i) + " is undefined");
    if (tensor.device().type != DeviceType::cpu)
      throw Error(Errc::invalid_argument, describe(frame) + ": tensor " + std::to_string(i) +
                                              " is on " + to_string(tensor.device()) +
                                              "; byte transports carry host tensors only");
    head_bytes += descriptor_bytes(tensor);
    payload += tensor.nbytes();
  }

  head_.resize(head_bytes);
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
  put(out, static_cast<std::uint32_t>(frame.tensors.size()));
  put(out, payload);
  for (const Tensor& tensor : frame.tensors) {
    *out++ = static_cast<std::uint8_t>(tensor.dtype());
    *out++ = static_cast<std::uint8_t>(tensor.device().type);
    *out++ = static_cast<std::uint8_t>(tensor.shape().rank());
    for (std::int64_t dim : tensor.shape()) put(out, dim);
  }

  spans_.clear();
  spans_.push_back(iovec{head_.data(), head_.size()});
  if (!frame.metadata.empty())
    spans_.push_back(
        iovec{const_cast<std::uint8_t*>(frame.metadata.data()), frame.metadata.size()});
  for (const Tensor& tensor : frame.tensors)
    if (std::size_t n = tensor.nbytes(); n != 0) spans_.push_back(iovec{tensor.data(), n});
  size_ = head_.size() + frame.metadata.size() + payload;
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
    case Phase::descriptor:
    case Phase::dims: return {scratch_.data() + filled_, want_ - filled_};
    case Phase::metadata: return {metadata_.data() + filled_, want_ - filled_};
    case Phase::payload:
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
  frame.header = header_;
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
    case Phase::dims: parse_dims(want_ / 8); break;
    case Phase::metadata: start_payloads(0); break;
    case Phase::payload: start_payloads(current_ + 1); break;
    case Phase::ready:
    case Phase::failed: break;
  }
}

void FrameDecoder::parse_header() {
  const std::uint8_t* in = scratch_.data();
  const auto magic = get<std::uint32_t>(in);
  const auto version = get<std::uint16_t>(in);
  const auto flags = get<std::uint16_t>(in);
  const auto link_seq = get<std::uint64_t>(in);
  header_.group = get<std::uint32_t>(in);
  header_.op = get<std::uint32_t>(in);
  header_.seq = get<std::uint64_t>(in);
  header_.src = get<std::int32_t>(in);
  metadata_bytes_ = get<std::uint32_t>(in);
  tensor_count_ = get<std::uint32_t>(in);
  payload_bytes_ = get<std::uint64_t>(in);

  if (magic != kFrameMagic)
    fail(Errc::malformed, "bad magic " + hex(magic) + " (a rankmesh frame starts with 'RMSH' = " +
                              hex(kFrameMagic) + "): not a rankmesh peer, or the stream lost its place");
  if (version != kFrameVersion)
    fail(Errc::malformed, "frame format version " + std::to_string(version) +
                              " is not supported (this build speaks version " +
                              std::to_string(kFrameVersion) + ")");
  if (flags != 0) fail(Errc::malformed, "unknown frame flags " + hex(flags));
  if (link_seq != expected_seq_)
    fail(Errc::malformed, "out of sequence: the frame carries link sequence number " +
                              std::to_string(link_seq) + " (a frame was lost, repeated or reordered)");
  if (metadata_bytes_ > limits_.max_metadata_bytes)
    fail(Errc::limit_exceeded, "metadata of " + std::to_string(metadata_bytes_) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(limits_.max_metadata_bytes));
  if (tensor_count_ > limits_.max_tensors)
    fail(Errc::limit_exceeded, std::to_string(tensor_count_) + " tensors exceed the limit of " +
                                   std::to_string(limits_.max_tensors));
  if (payload_bytes_ > limits_.max_payload_bytes)
    fail(Errc::limit_exceeded, "a payload of " + std::to_string(payload_bytes_) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(limits_.max_payload_bytes));

  descriptors_.clear();
  tensors_.clear();
  described_bytes_ = 0;
  current_ = 0;
  if (tensor_count_ == 0) {
    after_descriptors();
  } else {
    expect(Phase::descriptor, 3);
  }
}

std::string FrameDecoder::which() const { return "tensor " + std::to_string(current_); }

void FrameDecoder::parse_descriptor() {
  const std::optional<DType> dtype = dtype_from_code(scratch_[0]);
  if (!dtype)
    fail(Errc::malformed, which() + " has dtype code " + std::to_string(scratch_[0]) +
                              ", which is not a known dtype");
  const std::optional<DeviceType> device = device_type_from_code(scratch_[1]);
  if (!device)
    fail(Errc::malformed, which() + " has device type code " + std::to_string(scratch_[1]) +
                              ", which is not a known device type");
  if (*device != DeviceType::cpu)
    fail(Errc::malformed, which() + " is described as a " + to_string(*device) +
                              " tensor; frames carry host tensors only");
  const int rank = scratch_[2];
  if (rank > Shape::kMaxRank)
    fail(Errc::malformed, which() + " has " + std::to_string(rank) + " dimensions (at most " +
                              std::to_string(Shape::kMaxRank) + ")");
  descriptors_.push_back(Descriptor{Shape{}, *dtype, 0});
  if (rank == 0) {
    parse_dims(0);
  } else {
    expect(Phase::dims, 8 * static_cast<std::size_t>(rank));
  }
}

void FrameDecoder::parse_dims(std::size_t rank) {
  Descriptor& desc = descriptors_.back();
  const std::uint8_t* in = scratch_.data();
  std::uint64_t numel = 1;
  for (std::size_t d = 0; d < rank; ++d) {
    const auto dim = get<std::int64_t>(in);
    if (dim < 0) fail(Errc::malformed, which() + " has a negative dimension " + std::to_string(dim));
    desc.shape.push_back(dim);
    if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(dim), &numel))
      fail(Errc::malformed, which() + " of shape " + to_string(desc.shape) +
                                " has more elements than 64 bits count");
  }
  std::uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(dtype_size(desc.dtype)), &nbytes) ||
      __builtin_add_overflow(described_bytes_, nbytes, &described_bytes_) ||
      described_bytes_ > payload_bytes_)
    fail(Errc::malformed, "the tensors described up to " + which() + " (shape " +
                              to_string(desc.shape) + ", " + to_string(desc.dtype) +
                              ") need more than the header's payload length of " +
                              std::to_string(payload_bytes_) + " bytes");
  desc.nbytes = static_cast<std::size_t>(nbytes);
  next_descriptor();
}

void FrameDecoder::next_descriptor() {
  if (++current_ < tensor_count_) {
    expect(Phase::descriptor, 3);
  } else {
    after_descriptors();
  }
}

void FrameDecoder::after_descriptors() {
  if (described_bytes_ != payload_bytes_)
    fail(Errc::malformed, "the header's payload length is " + std::to_string(payload_bytes_) +
                              " bytes but its tensors need " + std::to_string(described_bytes_));
  metadata_.resize(metadata_bytes_);
  if (metadata_bytes_ != 0) {
    expect(Phase::metadata, metadata_bytes_);
  } else {
    start_payloads(0);
  }
}

void FrameDecoder::start_payloads(std::size_t first) {
  for (std::size_t i = first; i < descriptors_.size(); ++i) {
    const Descriptor& desc = descriptors_[i];
    Tensor tensor;
    try {
      tensor = landing_ != nullptr && landing_->fits(header_, i, desc.shape, desc.dtype)
                   ? landing_->tensors[i]
                   : allocate_(desc.shape, desc.dtype);
    } catch (const std::exception& error) {
      fail(Errc::limit_exceeded, "cannot allocate tensor " + std::to_string(i) + " of shape " +
                                     to_string(desc.shape) + " and dtype " + to_string(desc.dtype) +
                                     ": " + error.what());
    }
    if (!tensor.defined() || tensor.device().type != DeviceType::cpu ||
        !(tensor.shape() == desc.shape) || tensor.dtype() != desc.dtype ||
        (desc.nbytes != 0 && tensor.data() == nullptr))
      fail(Errc::invalid_argument, "the allocator did not return a host tensor of shape " +
                                       to_string(desc.shape) + " and dtype " +
                                       to_string(desc.dtype) + " for tensor " + std::to_string(i));
    tensors_.push_back(std::move(tensor));
    if (desc.nbytes != 0) {
      current_ = i;
      expect(Phase::payload, desc.nbytes);
      return;
    }
  }
  expect(Phase::ready, 0);
}

}  // namespace rankmesh
