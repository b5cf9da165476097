// The wire format of a Frame on every byte transport (tcp, shm; a pipe in the tests). All
// integers little-endian:
//
//   header (52 bytes)      magic 'RMSH' u32 | version u16 | flags u16 | link seq u64 | group u32 |
//                          op u32 | op seq u64 | src i32 | metadata bytes u32 | tensors u32 |
//                          payload bytes u64 (the tensors' bytes, however they travel)
//   per tensor (72 bytes)  dtype code u8 | device type u8 | device index u8 | payload u8 (0: inline,
//                          1: lent) | rank u8 | 3 zero bytes | 8 x dim i64 (0 beyond the rank)
//   metadata               the msgpack bytes
//   payloads               per tensor, in order: its bytes (inline), or where the receiver reads
//                          them in the sender (lent: address u64 | length u64; shm only)
//
// The header and descriptors come first so that a receiver checks every size before it accepts a
// byte of metadata or payload. The link sequence number counts frames on one connection from 0
// and must grow by exactly one per frame. The descriptors carry the tensor's device, so a
// transport that carries device memory needs no other format; the ones here carry host tensors.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "deadline.hpp"
#include "frame.hpp"
#include "received_payloads.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {

inline constexpr std::uint32_t kFrameMagic = 0x48534d52;  // the bytes 'R' 'M' 'S' 'H'
inline constexpr std::uint16_t kFrameVersion = 2;
inline constexpr std::size_t kFrameHeaderBytes = 52;
inline constexpr std::size_t kDescriptorBytes = 8 + 8 * Shape::kMaxRank;
inline constexpr std::size_t kLentPayloadBytes = 16;

// A frame's header as it travels.
struct WireHeader {
  std::uint64_t link_seq = 0;
  FrameHeader frame;
  std::uint32_t metadata_bytes = 0;
  std::uint32_t tensors = 0;
  std::uint64_t payload_bytes = 0;
  // Header, descriptors and metadata: where the payloads start.
  std::uint64_t prefix_bytes() const noexcept {
    return kFrameHeaderBytes + std::uint64_t{tensors} * kDescriptorBytes + metadata_bytes;
  }
};

// What is wrong with bytes that claim to be (part of) a frame; empty `what` when nothing.
struct WireError {
  Errc code = Errc::malformed;
  std::string what;
  explicit operator bool() const noexcept { return !what.empty(); }
};

// Reads the header at `bytes` (kFrameHeaderBytes of them). Wrong: another magic, version or
// flags, a link sequence other than `expected_seq`, sizes beyond `limits` (limit_exceeded).
WireError parse_frame_header(const std::uint8_t* bytes, std::uint64_t expected_seq,
                             const FrameLimits& limits, WireHeader& header);
// Reads descriptor `index` at `bytes` (kDescriptorBytes of them). Wrong: an unknown dtype or
// device type, a non-host tensor (no transport here carries device memory yet), a rank beyond
// Shape::kMaxRank, non-zero padding, a negative dimension, more bytes than 64 bits count.
WireError parse_descriptor(const std::uint8_t* bytes, std::size_t index, TensorDescriptor& out);
// Writes the descriptor of `tensor` at `out` (kDescriptorBytes).
void write_descriptor(std::uint8_t* out, const Tensor& tensor, bool lent) noexcept;
// A lent payload's address and length in the sender (kLentPayloadBytes at `bytes`).
struct LentPayload {
  std::uint64_t address = 0;
  std::uint64_t length = 0;
};
LentPayload read_lent_payload(const std::uint8_t* bytes) noexcept;

// Throws Error(limit_exceeded) when `frame` is beyond `limits` (a sender's early, local check).
void check_frame_limits(const Frame& frame, const FrameLimits& limits);

// Waits until every tensor's ready event has completed, so that its bytes may be read. Throws
// ChannelTimeout naming the tensor at the deadline (nothing of the frame is sent yet: a sender
// may try again), or the event's own error when it failed.
// `except_chunked`: the frame's chunked payloads are skipped (a channel that writes them chunk
// by chunk waits for each chunk instead).
void wait_payloads_ready(const Frame& frame, Deadline deadline, bool except_chunked = false);

// Lays out frames for one scatter-gather write. Reuses its buffers: encoding allocates nothing
// once they have grown to the largest frame's needs.
class FrameEncoder {
public:
  // The frame as spans: header and descriptors (in this encoder's buffer), the metadata, then
  // each non-empty tensor's bytes (the frame's own memory, never copied) — or, for a tensor of
  // more than `lend_above` bytes, its address and length (in this encoder's buffer), for a
  // receiver that reads the sender's memory itself (shm). Valid until the next encode() and
  // while `frame` is unchanged. The caller waits for the tensors' ready events before the
  // bytes are read (wait_payloads_ready). Throws Error(invalid_argument) for an undefined or
  // non-host tensor, or sizes the format cannot carry.
  std::span<const iovec> encode(const Frame& frame, std::uint64_t link_seq,
                                std::size_t lend_above = kNeverLend);
  static constexpr std::size_t kNeverLend = ~std::size_t{0};
  // Total bytes of the last encoded frame, and of its header, descriptors and metadata.
  std::size_t size() const noexcept { return size_; }
  std::size_t prefix_bytes() const noexcept { return prefix_; }
  // Whether tensor `index` of the last encoded frame is lent, and their bytes together.
  bool lent(std::size_t index) const noexcept { return lent_[index] != 0; }
  std::size_t lent_bytes() const noexcept { return lent_bytes_; }

private:
  std::vector<std::uint8_t> head_;  // header, descriptors, then the lent payloads' addresses
  std::vector<iovec> spans_;
  std::vector<std::uint8_t> lent_;  // a byte per tensor: vector<bool>'s bit access cost ~45
                                    // instructions per tensor on the per-message path
  std::size_t size_ = 0;
  std::size_t prefix_ = 0;
  std::size_t lent_bytes_ = 0;
};

// Decodes a byte stream into frames, incrementally: bytes may arrive in any pieces. Payloads are
// read straight into tensors from the allocator, metadata into a buffer that circulates with the
// frames taken out. Malformed, oversized or out-of-sequence input throws Error(malformed or
// limit_exceeded) saying what was wrong; after that the decoder stays failed (every call
// rethrows), since the stream cannot be resynchronized.
class FrameDecoder {
public:
  // Lent payloads (addresses in the sender) are malformed here: a decoder reads a byte stream.
  explicit FrameDecoder(Allocator allocate, FrameLimits limits = {});

  // Where the next bytes of the stream go: the rest of the current part (header, descriptor,
  // metadata or one tensor's payload). Non-empty unless a frame is ready.
  std::span<std::uint8_t> next_buffer();
  // Accepts `n` bytes written at the start of next_buffer() (n <= its size).
  void commit(std::size_t n);
  // Copies bytes in, up to the end of the current frame; returns how many it took.
  std::size_t feed(std::span<const std::uint8_t> bytes);

  // True when a whole frame has arrived; take() it before feeding more.
  bool ready() const noexcept { return phase_ == Phase::ready; }
  // Moves the ready frame into `frame`, swapping buffers (the caller's vectors are reused).
  void take(Frame& frame);
  // True when part of a frame has arrived but not all of it.
  bool mid_frame() const noexcept;
  // The link sequence number the next (or current) frame must carry.
  std::uint64_t expected_sequence() const noexcept { return expected_seq_; }
  // Payloads of a frame matching `landing` are read into its tensors (Channel::land). Withdrawn
  // (null) in the middle of a landed payload, the rest of the frame goes to memory of its own.
  void land(const Landing* landing) noexcept;

private:
  enum class Phase { header, descriptor, metadata, payload, ready, failed };

  [[noreturn]] void fail(Errc code, const std::string& what);
  void finish_part();
  void parse_header();
  void parse_descriptor();
  void after_descriptors();
  std::string which() const;
  void start_payloads();
  void next_payload(std::size_t from);  // the next tensor from `from` with bytes, or ready
  void divert();  // landed_.divert(), a failure failing the decoder
  void expect(Phase phase, std::size_t bytes);

  Allocator allocate_;
  FrameLimits limits_;
  const Landing* landing_ = nullptr;
  LandedPayloads landed_;
  Phase phase_ = Phase::header;
  std::array<std::uint8_t, kDescriptorBytes> scratch_{};  // header or descriptor
  std::size_t want_ = kFrameHeaderBytes;  // bytes of the current part
  std::size_t filled_ = 0;                // of which have arrived
  std::uint64_t expected_seq_ = 0;
  std::string error_;
  Errc error_code_ = Errc::malformed;

  // The frame being decoded.
  WireHeader header_;
  std::uint64_t described_bytes_ = 0;
  std::vector<TensorDescriptor> descriptors_;
  std::vector<std::uint8_t> metadata_;
  std::vector<Tensor> tensors_;
  std::size_t current_ = 0;  // descriptor or tensor index
};

}  // namespace rankmesh
