// Decodes arbitrary bytes as a stream of frames, twice: fed whole, and fed in pieces through
// next_buffer()/commit() like the tcp transport reads. Both must agree; decoding must end in
// frames, an Error(malformed or limit_exceeded), or a wait for more bytes; and every frame must
// re-encode to exactly the bytes it came from (the format has one encoding per frame).
#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "frame_codec.hpp"

using namespace rankmesh;

namespace {

// Tighter than the defaults, so that every limit is reached by small inputs too.
constexpr FrameLimits kTight{.max_metadata_bytes = 4096, .max_tensors = 16,
                             .max_payload_bytes = 1 << 20};

struct Outcome {
  std::vector<std::size_t> frame_ends;  // stream offset after each frame
  std::string error;                    // empty: no error
  bool operator==(const Outcome&) const = default;
};

void check_reencodes(const Frame& frame, std::uint64_t link_seq, std::span<const std::uint8_t> from) {
  FrameEncoder encoder;
  std::size_t at = 0;
  for (const iovec& span : encoder.encode(frame, link_seq)) {
    if (at + span.iov_len > from.size() ||
        std::memcmp(from.data() + at, span.iov_base, span.iov_len) != 0)
      std::abort();
    at += span.iov_len;
  }
  if (at != from.size()) std::abort();
}

template <class Step>
Outcome decode(std::span<const std::uint8_t> bytes, Step step) {
  Outcome outcome;
  FrameDecoder decoder(nullptr, kTight);
  std::size_t at = 0, start = 0;
  try {
    while (at < bytes.size()) {
      at += step(decoder, bytes.subspan(at));
      if (!decoder.ready()) continue;
      Frame frame;
      decoder.take(frame);
      check_reencodes(frame, outcome.frame_ends.size(), bytes.subspan(start, at - start));
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  const Outcome whole = decode(bytes, [](FrameDecoder& decoder, std::span<const std::uint8_t> rest) {
    return decoder.feed(rest);
  });
  const std::size_t piece = size % 61 + 1;
  const Outcome pieces = decode(bytes, [piece](FrameDecoder& decoder, std::span<const std::uint8_t> rest) {
    std::span<std::uint8_t> into = decoder.next_buffer();
    const std::size_t n = std::min({into.size(), rest.size(), piece});
    std::memcpy(into.data(), rest.data(), n);
    decoder.commit(n);
    return n;
  });
  if (!(whole == pieces)) std::abort();
  return 0;
}
