// Matching: which message a receive gets. Every frame carries its group, its operation and a
// sequence number — per peer for point-to-point messages, per group for collectives — and a
// receive takes the frame whose number it expects. One rule decides every case (arrival()):
// an older number is late (its receive timed out here) and is discarded, never delivered to a
// later receive; a newer one means the peers disagree (failed sends, or operations issued in a
// different order) and fails the receive with an Error naming both sides. Frames for other
// groups or the other class wait in the rank's stash until their own receive (RankContext::recv).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "coordinator/call.hpp"
#include "op_code.hpp"

namespace rankmesh {

enum class Arrival { late, expected, early };
inline Arrival arrival(std::uint64_t expected, std::uint64_t got) noexcept {
  return got < expected ? Arrival::late : got == expected ? Arrival::expected : Arrival::early;
}

// Receives until the message numbered `expected` comes. `fetch()` gets the next message and
// returns its number (it throws at the deadline). A late one goes to `on_late(number)`, which
// returns true to end the wait with it (broadcast_object's ring announcement) or false to
// discard it; an early one to `on_early(number)`, which throws. Returns true when the expected
// message came, false when on_late ended the wait.
template <class Fetch, class OnLate, class OnEarly>
bool await_numbered(std::uint64_t expected, Fetch&& fetch, OnLate&& on_late, OnEarly&& on_early) {
  while (true) {
    const std::uint64_t got = fetch();
    switch (arrival(expected, got)) {
      case Arrival::late:
        if (on_late(got)) return false;
        continue;
      case Arrival::early:
        on_early(got);
        continue;  // not reached: on_early throws
      case Arrival::expected:
        return true;
    }
  }
}

// The error of a message that is not the one expected: another operation, or another number.
Error out_of_order(const Call& call, int src, OpCode expected_op, std::uint64_t expected_seq,
                   std::uint32_t got_op, std::uint64_t got_seq);

// The members' collectives diverged (`what`: how this rank knows): fails the group for every
// member (RankContext::fail_group) and returns the error this rank throws, Error(mismatch).
Error diverged(const Call& call, const std::string& what);

// A late message of collective `seq` from group rank `src` (asking for `theirs`, a request's
// trailer) that this rank completed without: diverged(), naming what this rank asked for then.
Error completed_without(const Call& call, int src, std::uint64_t seq, std::span<const std::uint8_t> theirs);

// Records one message of `call` in the rank's operation history (shown when an operation fails).
void record_message(const Call& call, const Frame& frame, int group_rank, bool sent);

// Sends `frame` to group rank `dst` as message `seq` of `op`.
void send_numbered(const Call& call, int dst, OpCode op, std::uint64_t seq, Frame& frame);

// --- point-to-point: FIFO per (group, src, dst), numbered per peer. A number stands for one
// send or receive call, whatever becomes of it, as a collective's number does: the k-th send to
// a peer pairs with that peer's k-th receive. A receive that times out uses up its number (its
// message, if it ever comes, is discarded); so does a send that fails, and the receive paired
// with it either timed out as well or finds the gap and says so. Neither side's failure shifts
// which message a later receive gets. Only a send refused for its arguments before anything
// left (invalid_argument, limit_exceeded) gives its number back: the caller learns at once that
// it was never made, and the receiver never waited for it.
template <class Send>
void send_point_to_point(const Call& call, int dst, Send&& send) {
  auto& next = call.group().sequences.sent[static_cast<std::size_t>(dst)];
  const std::uint64_t seq = next++;
  try {
    send(seq);
  } catch (const Error& e) {
    if (e.code() == Errc::invalid_argument || e.code() == Errc::limit_exceeded) --next;
    throw;
  }
}
// The next point-to-point message of `op` from group rank `src`, into `frame`.
void receive_point_to_point(const Call& call, int src, OpCode op, Frame& frame);

// --- collectives: every member numbers the group's collectives alike, and every message of a
// collective carries its sender's request (collective_request.hpp), which the receiver compares
// with its own: a difference, a message of another operation or number, or a late one of a
// collective that completed here, means the members diverged and fails the group (diverged()).
inline std::uint64_t begin_collective(const Call& call) { return call.group().sequences.collective++; }
// Message `seq` of collective `op` from group rank `src`, into `frame`.
// `alternative`: a second operation this receive accepts (broadcast_object's ring set-up).
// `landing`: where this frame's payloads should go (see Landing).
void receive_collective(const Call& call, int src, OpCode op, std::uint64_t seq, Frame& frame,
                        std::optional<OpCode> alternative = std::nullopt,
                        const Landing* landing = nullptr);
// Takes the request off the metadata of message `seq` from group rank `src` that came some
// other way (broadcast_object's ring) and checks it as receive_collective does.
void check_request(const Call& call, int src, std::uint64_t seq, std::vector<std::uint8_t>& metadata);

}  // namespace rankmesh
