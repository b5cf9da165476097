// The registry's control protocol between rank 0 and every other rank — the wire form of the
// requests in control_messages.hpp — carried as frames over an authenticated tcp link (the HMAC
// handshake of auth.hpp runs first, so every message on a link comes from the rank that link
// authenticated; no message names its sender). A message is
// a kind (the frame's op), a request id (the frame's seq; a reply carries its request's id) and
// a few text fields (the metadata). CAF-free, so the fuzzer can build it alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "frame.hpp"

namespace rankmesh {

// Sent in every join; a registry of another version refuses the join naming both.
inline constexpr std::int32_t kControlProtocolVersion = 3;  // 3: group_fail, group_failed

// The frame group of every control frame (no data-plane group uses it).
inline constexpr std::uint32_t kControlGroup = 0xC0A7F00D;

enum class ControlKind : std::uint32_t {
  join = 1,       // rank -> registry: protocol version, node id, data-plane address
  joined = 2,     // registry -> rank: failure ("" when formed), then the directory lines
  exchange = 3,   // rank -> registry: round name, value
  exchanged = 4,  // registry -> rank: failure, then every rank's value in rank order
  leave = 5,      // rank -> registry: nothing
  left = 6,       // registry -> rank: failure
  beat = 7,       // rank -> registry: nothing
  beat_ack = 8,   // registry -> rank: rank 0's CLOCK_MONOTONIC in ns (the trace's clock offset)
  propose = 9,    // rank -> registry: its initialize_model_parallel proposal, for the leader
  verdict = 10,   // registry -> rank: the leader's verdict ("" when all agree)
  fail = 11,      // registry -> rank: why the world failed
  // rank -> registry: group id (decimal), reason, then the member ranks to tell (decimal, one
  // field each, at least one): the rank failed that group as a whole (RankContext::fail_group)
  group_fail = 12,
  group_failed = 13,  // registry -> rank: group id (decimal), reason — a group of it failed
};

const char* to_string(ControlKind kind) noexcept;

struct ControlMessage {
  ControlKind kind = ControlKind::beat;
  std::uint64_t request = 0;
  std::vector<std::string> fields;
  bool operator==(const ControlMessage&) const = default;
};

// At most this many fields in one message (a directory or an exchange has one per rank).
inline constexpr std::size_t kMaxControlFields = 1 << 16;

// A group failure notice's reason is cut to this many bytes by its sender; longer is malformed.
inline constexpr std::size_t kMaxGroupFailureReason = 4096;

// What a group_fail or group_failed message says (members: empty in a group_failed).
struct GroupNotice {
  std::uint32_t group = 0;
  std::string reason;
  std::vector<int> members;  // global ranks
  bool operator==(const GroupNotice&) const = default;
};
// `reason` cut to kMaxGroupFailureReason bytes.
std::string bounded_reason(std::string reason);
// group_fail (with members) or group_failed (without), request id 0: they are answered by nothing.
ControlMessage encode_group_fail(const GroupNotice& notice);
ControlMessage encode_group_failed(std::uint32_t group, const std::string& reason);
// Reads a group_fail or group_failed message. Throws Error(malformed) naming what is wrong: another
// kind, a group id or member that is not a decimal number in range, a reason over the bound.
// Whether the members are in the world is the registry's to check.
GroupNotice decode_group_notice(const ControlMessage& message);

// Writes `message` into `frame` (header and metadata; no tensors). Throws Error(invalid_argument)
// for a field count outside what its kind allows.
void encode_control(const ControlMessage& message, Frame& frame);

// Reads a control message from a received frame. Throws Error(malformed) naming what is wrong:
// tensors, a foreign group, an unknown kind, a field count its kind does not allow, lengths that
// overrun the metadata or leave bytes over.
ControlMessage decode_control(const Frame& frame);

}  // namespace rankmesh
