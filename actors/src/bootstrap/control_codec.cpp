#include "bootstrap/control_codec.hpp"

#include <charconv>
#include <cstring>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

// How many fields each kind carries: exactly `min` when `max` equals it, else min..max.
struct Arity {
  std::size_t min, max;
};

bool known(std::uint32_t kind) { return kind >= 1 && kind <= 13; }

Arity arity(ControlKind kind) {
  switch (kind) {
    case ControlKind::join: return {3, 3};
    case ControlKind::exchange:
    case ControlKind::group_failed: return {2, 2};
    case ControlKind::group_fail: return {3, kMaxControlFields};
    case ControlKind::leave:
    case ControlKind::beat: return {0, 0};
    case ControlKind::beat_ack:
    case ControlKind::left:
    case ControlKind::propose:
    case ControlKind::verdict:
    case ControlKind::fail: return {1, 1};
    case ControlKind::joined:
    case ControlKind::exchanged: return {1, kMaxControlFields};
  }
  return {0, 0};
}

void put32(std::vector<std::uint8_t>& out, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}

}  // namespace

const char* to_string(ControlKind kind) noexcept {
  switch (kind) {
    case ControlKind::join: return "join";
    case ControlKind::joined: return "joined";
    case ControlKind::exchange: return "exchange";
    case ControlKind::exchanged: return "exchanged";
    case ControlKind::leave: return "leave";
    case ControlKind::left: return "left";
    case ControlKind::beat: return "beat";
    case ControlKind::beat_ack: return "beat_ack";
    case ControlKind::propose: return "propose";
    case ControlKind::verdict: return "verdict";
    case ControlKind::fail: return "fail";
    case ControlKind::group_fail: return "group_fail";
    case ControlKind::group_failed: return "group_failed";
  }
  return "unknown";
}

std::string bounded_reason(std::string reason) {
  if (reason.size() > kMaxGroupFailureReason) reason.resize(kMaxGroupFailureReason);
  return reason;
}

ControlMessage encode_group_fail(const GroupNotice& notice) {
  ControlMessage message{ControlKind::group_fail, 0, {std::to_string(notice.group), bounded_reason(notice.reason)}};
  for (int member : notice.members) message.fields.push_back(std::to_string(member));
  return message;
}

ControlMessage encode_group_failed(std::uint32_t group, const std::string& reason) {
  return ControlMessage{ControlKind::group_failed, 0, {std::to_string(group), bounded_reason(reason)}};
}

GroupNotice decode_group_notice(const ControlMessage& message) {
  auto malformed = [&](const std::string& why) {
    return Error(Errc::malformed, std::string("a '") + to_string(message.kind) + "' message: " + why);
  };
  if (message.kind != ControlKind::group_fail && message.kind != ControlKind::group_failed)
    throw malformed("not a group failure notice");
  const Arity allowed = arity(message.kind);
  if (message.fields.size() < allowed.min || message.fields.size() > allowed.max)
    throw malformed(std::to_string(message.fields.size()) + " fields");
  // Plain decimal, no sign, no spaces, nothing left over.
  auto number = [&](const std::string& text, auto& value, const char* what) {
    const char* end = text.data() + text.size();
    auto [at, error] = std::from_chars(text.data(), end, value);
    if (text.empty() || text.size() > 10 || text[0] == '-' || error != std::errc() || at != end)
      throw malformed(std::string(what) + " '" + text.substr(0, 16) + "' is not a decimal number in range");
  };
  GroupNotice notice;
  number(message.fields[0], notice.group, "the group id");
  if (message.fields[1].size() > kMaxGroupFailureReason)
    throw malformed("a reason of " + std::to_string(message.fields[1].size()) + " bytes (at most " +
                    std::to_string(kMaxGroupFailureReason) + ")");
  notice.reason = message.fields[1];
  for (std::size_t i = 2; i < message.fields.size(); ++i) {
    int member = 0;
    number(message.fields[i], member, "a member rank");
    notice.members.push_back(member);
  }
  return notice;
}

// Metadata: field count u32, then per field its length u32 and its bytes (little-endian).
void encode_control(const ControlMessage& message, Frame& frame) {
  const Arity allowed = arity(message.kind);
  if (message.fields.size() < allowed.min || message.fields.size() > allowed.max)
    throw Error(Errc::invalid_argument, std::string("a '") + to_string(message.kind) +
                                            "' control message cannot carry " +
                                            std::to_string(message.fields.size()) + " fields");
  frame.header = FrameHeader{kControlGroup, static_cast<std::uint32_t>(message.kind),
                             message.request, 0};
  frame.tensors.clear();
  frame.metadata.clear();
  put32(frame.metadata, static_cast<std::uint32_t>(message.fields.size()));
  for (const std::string& field : message.fields) {
    put32(frame.metadata, static_cast<std::uint32_t>(field.size()));
    frame.metadata.insert(frame.metadata.end(), field.begin(), field.end());
  }
}

ControlMessage decode_control(const Frame& frame) {
  auto malformed = [](const std::string& why) {
    return Error(Errc::malformed, "control message: " + why);
  };
  if (frame.header.group != kControlGroup)
    throw malformed("frame of group " + std::to_string(frame.header.group) + ", not the control group");
  if (!known(frame.header.op)) throw malformed("unknown kind " + std::to_string(frame.header.op));
  if (!frame.tensors.empty()) throw malformed("carries tensors");
  ControlMessage message;
  message.kind = static_cast<ControlKind>(frame.header.op);
  message.request = frame.header.seq;
  const std::vector<std::uint8_t>& bytes = frame.metadata;
  std::size_t at = 0;
  auto get32 = [&](const char* what) {
    if (bytes.size() - at < 4) throw malformed(std::string("ends inside ") + what);
    std::uint32_t value = 0;
    for (int i = 0; i < 4; ++i) value |= static_cast<std::uint32_t>(bytes[at++]) << (8 * i);
    return value;
  };
  const std::uint32_t count = get32("the field count");
  const Arity allowed = arity(message.kind);
  if (count < allowed.min || count > allowed.max)
    throw malformed(std::string("a '") + to_string(message.kind) + "' message with " +
                    std::to_string(count) + " fields");
  // Every field takes at least its 4-byte length: a count the bytes cannot hold is refused
  // before anything is reserved for it.
  if (count > (bytes.size() - at) / 4)
    throw malformed(std::to_string(count) + " fields in " + std::to_string(bytes.size()) + " bytes");
  message.fields.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::uint32_t length = get32("a field length");
    if (length > bytes.size() - at)
      throw malformed("field " + std::to_string(i) + " of " + std::to_string(length) +
                      " bytes overruns the message");
    message.fields.emplace_back(reinterpret_cast<const char*>(bytes.data() + at), length);
    at += length;
  }
  if (at != bytes.size())
    throw malformed(std::to_string(bytes.size() - at) + " bytes left over after the fields");
  return message;
}

}  // namespace rankmesh
