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

// Receives the next frame from group rank `src` (RankContext::recv) until the call's deadline;
// past the call's watchdog point, logs waiting_line() first, once per call. False at the
// deadline. Waits in slices (50 ms) and throws Error(mismatch) "...: the group failed: <reason>"
// once the call's group has failed on another member (RankContext::group_failure) — every
// receive waits here, so a notice ends any member's wait, whomever it waits for.
bool receive_watched(const Call& call, int src, bool collective, Frame& frame, OpCode op,
                     std::uint64_t seq, const Landing* landing = nullptr);

// "rankmesh watchdog: tp:0 group rank 1 (rank 3) all_reduce #17 has waited 1500 ms of its
// 3000 ms timeout for group rank 0 (rank 2); not heard from in this collective yet: group rank 0
// (rank 2) (last: #16); last heard from rank 2: all_reduce #16 on tp:0"
std::string waiting_line(const Call& call, int src, OpCode op, std::uint64_t seq);

}  // namespace rankmesh
