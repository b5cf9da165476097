#include "coordinator/watchdog.hpp"

#include <algorithm>

#include "parker.hpp"

namespace rankmesh {

std::string waiting_line(const Call& call, int src, OpCode op, std::uint64_t seq) {
  const GroupState& group = call.group();
  const auto waited = std::chrono::duration_cast<std::chrono::nanoseconds>(
      Clock::now() - (call.deadline() - group.timeout));
  std::string line = "rankmesh watchdog: " + call.where() + " #" + std::to_string(seq) +
                     " (" + op_name(static_cast<std::uint32_t>(op)) + ") has waited " +
                     milliseconds_text(waited) + " of its " + milliseconds_text(group.timeout) +
                     " timeout for " + call.who(src);
  // Members from whom no message of this collective (or a later one) came yet: the one awaited,
  // and others this rank has not reached yet or that are late too.
  std::vector<int> behind{src};
  if (is_collective_op(static_cast<std::uint32_t>(op))) {
    std::string listed;
    for (int member = 0; member < group.size(); ++member) {
      const std::uint64_t heard = group.sequences.collectives_heard[static_cast<std::size_t>(member)];
      if (member == group.rank_in_group || heard > seq) continue;
      if (member != src) behind.push_back(member);
      listed += (listed.empty() ? "" : ", ") + call.who(member) +
                (heard == 0 ? std::string(" (no collective yet)")
                            : " (last: #" + std::to_string(heard - 1) + ")");
    }
    if (!listed.empty()) line += "; not heard from in this collective yet: " + listed;
  } else {
    const std::uint64_t received = group.sequences.received[static_cast<std::size_t>(src)];
    line += received > 1 ? "; its last message here was #" + std::to_string(received - 2)
                         : "; nothing came from it in this group yet";
  }
  for (int member : behind) {
    const int rank = group.global_rank(member);
    const std::string last = call.rank().last_from(rank);
    line += "; last heard from rank " + std::to_string(rank) + ": " +
            (last.empty() ? "nothing among this rank's recent messages" : last);
  }
  return line;
}

namespace {

// How long one wait of a receive lasts before it looks whether its group has failed on another
// member (RankContext::group_failure): a notice from the control plane wakes no channel, so this
// is how late a waiting member learns it. 50 ms keeps that far below the failure timeout (2 s by
// default: a notice is seen within 2.5% of it) and any operation's timeout, while a rank parked
// in a receive stays near idle: each slice costs one wake-up (~20 us) and the transport's spin
// before it parks again (50 us by default) plus, over tcp, a poll — measured 0.1-0.35% of a core,
// twice that with 25 ms slices, which left too little margin under the 1% a parked rank may use
// on a loaded machine. A longer spin (RANKMESH_SPIN_US) stretches the slice to 100 spins, so
// that re-spinning never takes more than ~1%.
constexpr std::chrono::nanoseconds kSlice = std::chrono::milliseconds(50);

[[gnu::cold, gnu::noinline]] void throw_if_group_failed(const Call& call) {
  if (const std::string failure = call.rank().group_failure(call.group().id); !failure.empty())
    throw call.rank().reported(Error(Errc::mismatch, call.where() + ": the group failed: " + failure));
}

std::chrono::nanoseconds slice() { return std::max(kSlice, 100 * spin_budget()); }

}  // namespace

namespace watch {

Deadline first_until(const Call& call) noexcept {
  // For a later receive of a long call this is already past and still takes a frame that is there.
  return std::min(call.watchdog_point(), call.deadline() - call.group().timeout + kSlice);
}

bool next_until(const Call& call, int src, OpCode op, std::uint64_t seq, Deadline& until) {
  // Another member failed the group (collective consensus): its notice ends the wait.
  if (call.rank().any_group_failed()) throw_if_group_failed(call);
  const Deadline end = call.deadline();
  if (until >= end) return false;
  const Deadline point = call.watchdog_point();  // the deadline when the watchdog is off
  const Deadline now = Clock::now();
  if (point < end && now >= point && call.claim_watchdog()) {
    const std::string line = waiting_line(call, src, op, seq);
    call.rank().log(line);
    call.rank().tracer().instant("watchdog", call.group().name, line);
  }
  until = std::min(end, now + slice());
  if (now < point && point < until) until = point;
  return true;
}

}  // namespace watch

bool receive_watched(const Call& call, int src, bool collective, Frame& frame, OpCode op,
                     std::uint64_t seq, const Landing* landing) {
  RankContext& rank = call.rank();
  const int from = call.group().global_rank(src);
  const std::uint32_t group = call.group().id;
  return wait_watched(call, src, op, seq, [&](Deadline until) {
    return rank.recv(from, group, collective, frame, until, call.describe(), landing);
  });
}

}  // namespace rankmesh
