#include "coordinator/watchdog.hpp"

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

bool receive_watched(const Call& call, int src, bool collective, Frame& frame, OpCode op,
                     std::uint64_t seq, const Landing* landing) {
  RankContext& rank = call.rank();
  const int from = call.group().global_rank(src);
  const std::uint32_t group = call.group().id;
  const Deadline point = call.watchdog_point();
  if (point < call.deadline()) {
    // A point already past still takes a frame that is there (no clock read on this path).
    if (rank.recv(from, group, collective, frame, point, call.describe(), landing)) return true;
    if (call.claim_watchdog()) {
      const std::string line = waiting_line(call, src, op, seq);
      rank.log(line);
      rank.tracer().instant("watchdog", call.group().name, line);
    }
  }
  return rank.recv(from, group, collective, frame, call.deadline(), call.describe(), landing);
}

}  // namespace rankmesh
