#include "coordinator/matcher.hpp"

#include <algorithm>
#include <array>
#include <span>

#include "coordinator/object_rings.hpp"
#include "coordinator/watchdog.hpp"

namespace rankmesh {

Error out_of_order(const Call& call, int src, OpCode expected_op, std::uint64_t expected_seq,
                   std::uint32_t got_op, std::uint64_t got_seq) {
  return Error(Errc::mismatch, call.group().name + ": " + call.who(call.rank_in_group()) +
                                   " expected " + op_name(static_cast<std::uint32_t>(expected_op)) +
                                   " #" + std::to_string(expected_seq) + " from " + call.who(src) +
                                   ", which sent " + op_name(got_op) + " #" +
                                   std::to_string(got_seq) +
                                   " (operations issued in a different order on each side)");
}

void record_message(const Call& call, const Frame& frame, int group_rank, bool sent) {
  std::size_t bytes = 0;
  for (const Tensor& t : frame.tensors) bytes += t.nbytes();
  const int peer = call.group().global_rank(group_rank);
  call.rank().record(frame.header.op, call.group().history_label, peer, sent, frame.header.seq,
                     bytes);
  // The timeline counts what a message moves, metadata too (objects travel in it).
  if (call.tracing()) call.trace_message(frame.header.seq, peer, sent, bytes + frame.metadata.size());
}

void send_numbered(const Call& call, int dst, OpCode op, std::uint64_t seq, Frame& frame) {
  if (is_collective_op(static_cast<std::uint32_t>(op))) {
    const auto request = call.request().trailer();
    frame.metadata.insert(frame.metadata.end(), request.begin(), request.end());
  }
  frame.header = FrameHeader{call.group().id, static_cast<std::uint32_t>(op), seq, call.rank().rank()};
  // Only a tensor dict's own frame carries a dict (not one left from a frame received before).
  if (op != OpCode::tensor_dict) frame.dict.reset();
  // Nor a loan, other than a broadcast's own (one left from a broadcast received before).
  if (op != OpCode::broadcast) frame.loan.reset();
  record_message(call, frame, dst, true);
  RankContext& rank = call.rank();
  const int peer = call.group().global_rank(dst);
  // Waited for in slices, as a receive is: a peer that stopped reading leaves the channel full,
  // and a member that failed the group meanwhile must end the wait, which nothing else wakes.
  // The first try may wait one slice from the call's start (no clock read; a send rarely waits,
  // so the watchdog's point is left to watch::next_until).
  Deadline until = call.deadline() - call.group().timeout + watch::kSlice;
  std::string why;
  while (!rank.try_send(peer, frame, until, call.deadline(), call.describe(), why))
    if (!watch::next_until(call, dst, op, seq, until))
      throw rank.links().not_sent(peer, call.describe(), why);
}

namespace {

// receive_point_to_point's failures, out of line: their messages are made only when they happen.
[[noreturn, gnu::cold, gnu::noinline]] void throw_nothing_came(const Call& call, int src, OpCode op,
                                                               std::uint64_t expected) {
  throw call.rank().reported(Error(Errc::timeout, call.where() + " waited " +
                                                      milliseconds_text(call.group().timeout) +
                                                      " for " + op_name(static_cast<std::uint32_t>(op)) +
                                                      " #" + std::to_string(expected) + " from " +
                                                      call.who(src) + ", which did not come"));
}

[[noreturn, gnu::cold, gnu::noinline]] void throw_sends_failed(const Call& call, int src, OpCode op,
                                                               std::uint64_t expected,
                                                               std::uint64_t got) {
  const std::string failed = got - expected > 1
                                 ? "s #" + std::to_string(expected) + "..#" + std::to_string(got - 1)
                                 : " #" + std::to_string(expected);
  throw call.rank().reported(
      Error(Errc::mismatch, call.where() + " expected " + op_name(static_cast<std::uint32_t>(op)) +
                                " #" + std::to_string(expected) + " from " + call.who(src) +
                                ", whose send" + failed +
                                " failed there, so nothing came for this receive; its next "
                                "message, #" + std::to_string(got) + ", is left for the next receive"));
}

}  // namespace

void receive_point_to_point(const Call& call, int src, OpCode op, Frame& frame) {
  GroupState& group = call.group();
  RankContext& rank = call.rank();
  auto& next = group.sequences.received[static_cast<std::size_t>(src)];
  const std::uint64_t expected = next++;
  const int from = group.global_rank(src);
  auto fetch = [&] {
    if (!receive_watched(call, src, false, frame, op, expected)) [[unlikely]]
      throw_nothing_came(call, src, op, expected);
    // Whatever becomes of this frame (delivered, discarded as late, refused as out of order),
    // the schema it defines stays defined: the sender counts on it (schema_cache.hpp).
    if (frame.header.op == static_cast<std::uint32_t>(OpCode::tensor_dict))
      group.schemas.from(src).take_in(frame.metadata);
    return frame.header.seq;
  };
  auto discard = [](std::uint64_t) { return false; };
  // The sender's calls #expected .. #got-1 failed before their message left: this receive has
  // none. The message that came is kept for the next receive.
  auto gap = [&](std::uint64_t got) {
    next = got;
    rank.put_back(from, std::move(frame));
    frame = Frame{};
    throw_sends_failed(call, src, op, expected, got);
  };
  await_numbered(expected, fetch, discard, gap);
  record_message(call, frame, src, false);
  if (frame.header.op != static_cast<std::uint32_t>(op))
    throw out_of_order(call, src, op, expected, frame.header.op, frame.header.seq);
}

Error diverged(const Call& call, const std::string& what) {
  const std::string message = call.where() + ": " + what + " (the members' collectives diverged)";
  call.rank().fail_group(call.group().id, call.group().members, message);
  return call.rank().reported(Error(Errc::mismatch, message));
}

namespace {

// A received collective message's request, taken off its metadata.
struct ReceivedRequest {
  std::array<std::uint8_t, CollectiveRequest::kMaxBody + 1> bytes;
  std::size_t size = 0;
  std::span<const std::uint8_t> trailer() const noexcept { return {bytes.data(), size}; }
};

void take_request(const Call& call, int src, std::uint64_t seq, std::vector<std::uint8_t>& metadata,
                  ReceivedRequest& out) {
  const auto trailer = CollectiveRequest::trailer_of(metadata);
  if (trailer.empty())
    throw call.rank().reported(Error(Errc::malformed, call.where() + ": " + call.who(src) +
                                                          " sent #" + std::to_string(seq) +
                                                          " without a well-formed request"));
  out.size = trailer.size();
  std::copy(trailer.begin(), trailer.end(), out.bytes.begin());
  metadata.resize(metadata.size() - trailer.size());
}

}  // namespace

Error completed_without(const Call& call, int src, std::uint64_t seq, std::span<const std::uint8_t> theirs) {
  const std::string mine = call.group().recent_requests.describe(seq);
  return diverged(call, call.who(src) + " sent a message of its #" + std::to_string(seq) + " (" +
                            CollectiveRequest::describe(theirs) +
                            "), a collective that completed here without it" +
                            (mine.empty() ? std::string() : " (this rank asked for " + mine + ")"));
}

namespace {

Error requests_differ(const Call& call, int src, std::uint64_t seq, const ReceivedRequest& theirs) {
  return diverged(call, call.who(src) + " asked for " + CollectiveRequest::describe(theirs.trailer()) +
                            " as #" + std::to_string(seq) + ", this rank for " +
                            call.request().describe());
}

}  // namespace

void receive_collective(const Call& call, int src, OpCode op, std::uint64_t seq, Frame& frame,
                        std::optional<OpCode> alternative, const Landing* landing) {
  GroupState& group = call.group();
  RankContext& rank = call.rank();
  ReceivedRequest theirs;
  auto fetch = [&] {
    if (!receive_watched(call, src, true, frame, op, seq, landing))
      throw rank.reported(Error(Errc::timeout, call.where() + " #" + std::to_string(seq) +
                                                   " waited " + milliseconds_text(group.timeout) +
                                                   " for " + call.who(src) +
                                                   ", which did not send its part"));
    take_request(call, src, frame.header.seq, frame.metadata, theirs);
    return frame.header.seq;
  };
  // From a collective that failed here (timed out, most often): discarded, but a ring
  // announcement is kept (broadcast_object attaches late) and ends the wait of the receive that
  // accepts one. From a collective that completed here: one this rank never expected.
  auto late = [&](std::uint64_t got) {
    if (!group.sequences.unfinished(got)) {
      record_message(call, frame, src, false);
      throw completed_without(call, src, got, theirs.trailer());
    }
    if (keep_ring_announcement(group, src, frame)) return alternative == OpCode::broadcast_ring;
    return false;
  };
  auto early = [&](std::uint64_t got) {
    record_message(call, frame, src, false);
    throw diverged(call, call.who(src) + " sent a message of its #" + std::to_string(got) + " (" +
                             CollectiveRequest::describe(theirs.trailer()) + ") while this rank waits for #" +
                             std::to_string(seq) + " (" + call.request().describe() +
                             "): collectives issued in a different order on each side");
  };
  if (!await_numbered(seq, fetch, late, early)) return;
  record_message(call, frame, src, false);
  auto& heard = group.sequences.collectives_heard[static_cast<std::size_t>(src)];
  heard = std::max(heard, seq + 1);
  const bool expected_op = frame.header.op == static_cast<std::uint32_t>(op) ||
                           (alternative && frame.header.op == static_cast<std::uint32_t>(*alternative));
  // A ring announcement stands for the object it replaces: the same request.
  if (!expected_op || !call.request().agrees_with(theirs.trailer()))
    throw requests_differ(call, src, frame.header.seq, theirs);
}

void check_request(const Call& call, int src, std::uint64_t seq, std::vector<std::uint8_t>& metadata) {
  ReceivedRequest theirs;
  take_request(call, src, seq, metadata, theirs);
  if (!call.request().agrees_with(theirs.trailer())) throw requests_differ(call, src, seq, theirs);
}

}  // namespace rankmesh
