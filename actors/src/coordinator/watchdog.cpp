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

[[gnu::cold, gnu::noinline]] void throw_if_group_failed(const Call& call) {
  if (const std::string failure = call.rank().group_failure(call.group().id); !failure.empty())
    throw call.rank().reported(Error(Errc::mismatch, call.where() + ": the group failed: " + failure));
}

// A longer spin than the default stretches the slice (watch::kSlice).
std::chrono::nanoseconds slice() { return std::max(watch::kSlice, 100 * spin_budget()); }

}  // namespace

namespace watch {

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
