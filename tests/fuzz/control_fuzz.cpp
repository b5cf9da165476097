// Decodes arbitrary bytes as a registry control message
// (actors/src/bootstrap/control_codec.hpp): the first byte picks the kind (the frame's op), the
// rest is the metadata. Decoding must end in a message or an Error(malformed), and a message
// must re-encode to exactly the bytes it came from (the format has one encoding per message).
// A group failure notice (group_fail, group_failed) must then read as a notice or an
// Error(malformed), and a notice that reads must read the same once re-encoded.
#include <cstdint>
#include <cstdlib>

#include "bootstrap/control_codec.hpp"
#include "rankmesh/error.hpp"

using namespace rankmesh;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  Frame frame;
  frame.header = FrameHeader{kControlGroup, data[0] % 16u, 7, 0};
  frame.metadata.assign(data + 1, data + size);
  ControlMessage message;
  try {
    message = decode_control(frame);
  } catch (const Error& error) {
    if (error.code() != Errc::malformed) std::abort();
    return 0;
  }
  if (message.kind == ControlKind::group_fail || message.kind == ControlKind::group_failed) {
    try {
      const GroupNotice notice = decode_group_notice(message);
      const ControlMessage encoded = message.kind == ControlKind::group_fail
                                         ? encode_group_fail(notice)
                                         : encode_group_failed(notice.group, notice.reason);
      if (!(decode_group_notice(encoded) == notice)) std::abort();
    } catch (const Error& error) {
      if (error.code() != Errc::malformed) std::abort();
    }
  }
  Frame again;
  encode_control(message, again);
  if (again.metadata != frame.metadata || again.header.op != frame.header.op ||
      again.header.seq != frame.header.seq || again.header.group != frame.header.group)
    std::abort();
  return 0;
}
