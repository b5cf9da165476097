// What frame_fuzz and landing_fuzz share: decoding arbitrary bytes as a stream of frames, fed
// whole (feed) or in pieces through next_buffer()/commit() like the tcp transport reads.
// Decoding must end in frames, an Error(malformed or limit_exceeded), or a wait for more bytes;
// every frame must re-encode to exactly the bytes it came from (the format has one encoding per
// frame), and with a landing, exactly the tensors it fits must have been read into its tensors.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "frame_codec.hpp"

namespace rankmesh::fuzz {

// Tighter than the defaults, so that every limit is reached by small inputs too.
inline constexpr FrameLimits kTight{.max_metadata_bytes = 4096, .max_tensors = 16,
                                    .max_payload_bytes = 1 << 20};

struct Outcome {
  std::vector<std::size_t> frame_ends;  // stream offset after each frame
  std::vector<std::vector<bool>> landed;  // per frame, per tensor: read into the landing's tensor
  std::string error;                    // empty: no error
  bool operator==(const Outcome&) const = default;
};

inline void check_reencodes(const Frame& frame, std::uint64_t link_seq, std::span<const std::uint8_t> from) {
  FrameEncoder encoder;
  std::size_t at = 0;
  for (const iovec& span : encoder.encode(frame, link_seq)) {
    if (at + span.iov_len > from.size() || std::memcmp(from.data() + at, span.iov_base, span.iov_len) != 0)
      std::abort();
    at += span.iov_len;
  }
  if (at != from.size()) std::abort();
}

// Which of the frame's tensors are the landing's own (same memory); aborts unless that is
// exactly the tensors the landing fits.
inline std::vector<bool> check_landed(const Frame& frame, const Landing* landing) {
  std::vector<bool> landed;
  for (std::size_t i = 0; i < frame.tensors.size(); ++i) {
    const Tensor& tensor = frame.tensors[i];
    const bool fits = landing != nullptr && landing->fits(frame.header, i, tensor.shape(), tensor.dtype());
    const bool same_memory =
        landing != nullptr && i < landing->tensors.size() && tensor.data() == landing->tensors[i].data();
    if (tensor.nbytes() != 0 && fits != same_memory) std::abort();
    landed.push_back(fits);
  }
  return landed;
}

// Decodes `bytes` with `landing` (may be null): fed whole when `piece` is 0, else in pieces of at
// most `piece` bytes written into next_buffer().
inline Outcome decode(std::span<const std::uint8_t> bytes, const Landing* landing, std::size_t piece) {
  Outcome outcome;
  FrameDecoder decoder(nullptr, kTight);
  decoder.land(landing);
  std::size_t at = 0, start = 0;
  try {
    while (at < bytes.size()) {
      if (piece == 0) {
        at += decoder.feed(bytes.subspan(at));
      } else {
        std::span<std::uint8_t> into = decoder.next_buffer();
        const std::size_t n = std::min({into.size(), bytes.size() - at, piece});
        std::memcpy(into.data(), bytes.data() + at, n);
        decoder.commit(n);
        at += n;
      }
      if (!decoder.ready()) continue;
      Frame frame;
      decoder.take(frame);
      check_reencodes(frame, outcome.frame_ends.size(), bytes.subspan(start, at - start));
      outcome.landed.push_back(check_landed(frame, landing));
      outcome.frame_ends.push_back(at);
      start = at;
    }
    if (decoder.mid_frame() != (start != bytes.size())) std::abort();
  } catch (const Error& error) {
    if (error.code() != Errc::malformed && error.code() != Errc::limit_exceeded) std::abort();
    outcome.error = error.what();
    if (outcome.error.empty()) std::abort();
  }
  return outcome;
}

// Decodes whole and in pieces (sized from the input, 1 to 61 bytes); both must agree.
inline void decode_both_ways(std::span<const std::uint8_t> bytes, const Landing* landing) {
  const Outcome whole = decode(bytes, landing, 0);
  const Outcome pieces = decode(bytes, landing, bytes.size() % 61 + 1);
  if (!(whole == pieces)) std::abort();
}

}  // namespace rankmesh::fuzz
