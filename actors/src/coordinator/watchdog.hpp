// The watchdog (issue 13): a receive still waiting past a fraction of its operation's timeout
// (RuntimeOptions::watchdog, RANKMESH_WATCHDOG; half by default) logs one line naming the
// operation, the group and whom it waits for, the members not heard from in this collective yet
// (from the sequence numbers seen), and what this rank last heard from each — so a stuck world says who is stuck where before
// the timeout fires. It only speaks; the operation still ends at its deadline.
#pragma once

#include <cstdint>
#include <string>

#include "coordinator/call.hpp"
#include "op_code.hpp"

namespace rankmesh {

namespace watch {
// When the first wait of a call's receive ends: one slice after the call began, or at the
// watchdog point if sooner (no clock read on this path).
Deadline first_until(const Call& call) noexcept;
// After a wait that ended at `until` without what it waited for: throws Error(mismatch) "...:
// the group failed: <reason>" once the call's group has failed on another member
// (RankContext::group_failure); logs waiting_line() once past the watchdog point; sets `until`
// to the end of the next slice and returns true, or false once the call's deadline has passed.
bool next_until(const Call& call, int src, OpCode op, std::uint64_t seq, Deadline& until);
}  // namespace watch

// Waits for message `seq` of `op` from group rank `src` with `attempt(until)` — one try, true
// once the message came, false at `until` having lost nothing — until the call's deadline, in
// slices (50 ms): a notice that another member failed the group wakes no channel, so every wait
// looks for one between slices and ends with it, whomever it waits for. Past the call's watchdog
// point logs waiting_line() first, once per call. False at the deadline.
template <class Attempt>
bool wait_watched(const Call& call, int src, OpCode op, std::uint64_t seq, Attempt&& attempt) {
  Deadline until = watch::first_until(call);
  while (!attempt(until))
    if (!watch::next_until(call, src, op, seq, until)) return false;
  return true;
}

// The next frame from group rank `src` (RankContext::recv), waited for as wait_watched() does.
bool receive_watched(const Call& call, int src, bool collective, Frame& frame, OpCode op,
                     std::uint64_t seq, const Landing* landing = nullptr);

// "rankmesh watchdog: tp:0 group rank 1 (rank 3) all_reduce #17 has waited 1500 ms of its
// 3000 ms timeout for group rank 0 (rank 2); not heard from in this collective yet: group rank 0
// (rank 2) (last: #16); last heard from rank 2: all_reduce #16 on tp:0"
std::string waiting_line(const Call& call, int src, OpCode op, std::uint64_t seq);

}  // namespace rankmesh
