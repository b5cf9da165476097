// The watchdog (issue 13): a receive still waiting past a fraction of its operation's timeout
// (RuntimeOptions::watchdog, RANKMESH_WATCHDOG; half by default) logs one line naming the
// operation, the group and whom it waits for, the members not heard from in this collective yet
// (from the sequence numbers seen), and what this rank last heard from each — so a stuck world says who is stuck where before
// the timeout fires. It only speaks; the operation still ends at its deadline.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>

#include "coordinator/call.hpp"
#include "op_code.hpp"

namespace rankmesh {

namespace watch {
// How long one wait of a receive lasts before it looks whether its group has failed on another
// member (RankContext::group_failure): a notice from the control plane wakes no channel, so this
// is how late a waiting member learns it. 50 ms keeps that far below the failure timeout (2 s by
// default: a notice is seen within 2.5% of it) and any operation's timeout, while a rank parked
// in a receive stays near idle: each slice costs one wake-up (~20 us) and the transport's spin
// before it parks again (50 us by default) plus, over tcp, a poll — measured 0.1-0.35% of a core,
// twice that with 25 ms slices, which left too little margin under the 1% a parked rank may use
// on a loaded machine. A longer spin (RANKMESH_SPIN_US) stretches the slice to 100 spins, so
// that re-spinning never takes more than ~1%.
inline constexpr std::chrono::nanoseconds kSlice = std::chrono::milliseconds(50);
// When the first wait of a call's receive ends: one slice after the call began, or at the
// watchdog point if sooner (no clock read on this path). For a later receive of a long call it
// is already past and still takes a message that is there.
inline Deadline first_until(const Call& call) noexcept {
  return std::min(call.watchdog_point(), call.deadline() - call.group().timeout + kSlice);
}
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
