// The wire format of a Frame on byte transports (tcp). All integers little-endian:
//
//   header (52 bytes)  magic 'RMSH' u32 | version u16 | flags u16 | link seq u64 | group u32 |
//                      op u32 | op seq u64 | src i32 | metadata bytes u32 | tensors u32 |
//                      payload bytes u64
//   per tensor         dtype code u8 | device type u8 | rank u8 | rank x dim i64
//   metadata           the msgpack bytes
//   payloads           each tensor's bytes, back to back, in order
//
// The header and descriptors come first so that a receiver checks every size before it accepts a
// byte of metadata or payload. The link sequence number counts frames on one connection from 0
// and must grow by exactly one per frame. Only host (cpu) tensors travel in this version.
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
#include "rankmesh/error.hpp"

namespace rankmesh {

inline constexpr std::uint32_t kFrameMagic = 0x48534d52;  // the bytes 'R' 'M' 'S' 'H'
inline constexpr std::uint16_t kFrameVersion = 1;
inline constexpr std::size_t kFrameHeaderBytes = 52;
inline constexpr std::size_t kMaxDescriptorBytes = 3 + 8 * Shape::kMaxRank;

// Throws Error(limit_exceeded) when `frame` is beyond `limits` (a sender's early, local check).
void check_frame_limits(const Frame& frame, const FrameLimits& limits);

// Waits until every tensor's ready event has completed, so that its bytes may be read. Throws
// Error(timeout) naming the tensor at the deadline, or the event's own error when it failed.
void wait_payloads_ready(const Frame& frame, Deadline deadline);

// Lays out frames for one scatter-gather write. Reuses its buffers: encoding allocates nothing
// once they have grown to the largest frame's needs.
class FrameEncoder {
public:
  // The frame as spans: header and descriptors (in this encoder's buffer), the metadata, then
  // each non-empty tensor's bytes (the frame's own memory, never copied). Valid until the next
  // encode() and while `frame` is unchanged. The caller waits for the tensors' ready events
  // first (wait_payloads_ready). Throws Error(invalid_argument) for an undefined or non-host
  // tensor, or sizes the format cannot carry.
  std::span<const iovec> encode(const Frame& frame, std::uint64_t link_seq);
  // Total bytes of the last encoded frame.
  std::size_t size() const noexcept { return size_; }

private:
  std::vector<std::uint8_t> head_;
  std::vector<iovec> spans_;
  std::size_t size_ = 0;
};

// Decodes a byte stream into frames, incrementally: bytes may arrive in any pieces. Payloads are
// read straight into tensors from the allocator, metadata into a buffer that circulates with the
// frames taken out. Malformed, oversized or out-of-sequence input throws Error(malformed or
// limit_exceeded) saying what was wrong; after that the decoder stays failed (every call
// rethrows), since the stream cannot be resynchronized.
class FrameDecoder {
public:
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
  // Payloads of a frame matching `landing` are read into its tensors (Channel::land).
  void land(const Landing* landing) noexcept { landing_ = landing; }

private:
  enum class Phase { header, descriptor, dims, metadata, payload, ready, failed };
  struct Descriptor {
    Shape shape;
    DType dtype;
    std::size_t nbytes;
  };

  [[noreturn]] void fail(Errc code, const std::string& what);
  void finish_part();
  void parse_header();
  void parse_descriptor();
  void parse_dims(std::size_t rank);
  void next_descriptor();
  void after_descriptors();
  std::string which() const;
  void start_payloads(std::size_t first);
  void expect(Phase phase, std::size_t bytes);

  Allocator allocate_;
  FrameLimits limits_;
  const Landing* landing_ = nullptr;
  Phase phase_ = Phase::header;
  std::array<std::uint8_t, 8 * Shape::kMaxRank> scratch_{};  // header, descriptor or dims
  std::size_t want_ = kFrameHeaderBytes;  // bytes of the current part
  std::size_t filled_ = 0;                // of which have arrived
  std::uint64_t expected_seq_ = 0;
  std::string error_;
  Errc error_code_ = Errc::malformed;

  // The frame being decoded.
  FrameHeader header_;
  std::uint32_t metadata_bytes_ = 0;
  std::uint32_t tensor_count_ = 0;
  std::uint64_t payload_bytes_ = 0;
  std::uint64_t described_bytes_ = 0;
  std::vector<Descriptor> descriptors_;
  std::vector<std::uint8_t> metadata_;
  std::vector<Tensor> tensors_;
  std::size_t current_ = 0;  // descriptor or tensor index
};

}  // namespace rankmesh
