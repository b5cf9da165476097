#include "rank_context.hpp"

#include <algorithm>

#include "op_code.hpp"

namespace rankmesh {

RankContext::RankContext(int rank, int world_size, int local_rank,
                         std::chrono::nanoseconds timeout, Allocator allocator,
                         std::vector<DeviceBackend*> backends,
                         std::function<void(const std::string&)> log)
    : rank_(rank), world_size_(world_size), local_rank_(local_rank), timeout_(timeout),
      allocator_(std::move(allocator)), tracer_(std::make_shared<Tracer>(rank, world_size)),
      history_(rank, std::move(log)), links_(history_), stash_(world_size, epochs_),
      rings_(rank, links_, history_), queue_(rank), streams_(rank, std::move(backends)) {
  history_.observe([tracer = tracer_.get()](const Error& error) {
    if (!tracer->on()) return;
    const char* name = error.code() == Errc::timeout       ? "timeout"
                       : error.code() == Errc::peer_failed ? "peer_failure"
                       : error.code() == Errc::mismatch    ? "mismatch"
                                                           : "error";
    tracer->instant(name, "", error.what());
  });
}

bool RankContext::recv(int src, std::uint32_t group, bool collective, Frame& out,
                       Deadline deadline, const Describe& what, const Landing* landing) {
  if (stash_.take(src, group, collective, out)) return true;
  while (true) {
    if (!links_.receive(src, out, deadline, what, landing)) return false;
    if (out.header.group == group && is_collective_op(out.header.op) == collective) return true;
    // Another group's message (or the other class) overtook ours: keep it for its receive.
    if (!stash_.stale(out.header.group)) {
      if (stash_.full(src)) {
        const std::string why = stash_.describe_full(src, rank_);
        links_.close_channel_from(src, why);
        throw reported(Error(Errc::limit_exceeded, what() + ": " + why));
      }
      stash_.keep(src, std::move(out), false);
    }
    out = Frame{};
  }
}

void RankContext::fail_group(std::uint32_t group, const std::vector<int>& members,
                             const std::string& reason) noexcept {
  try {
    if (!group_failed(group, reason) || !group_notifier_) return;
    std::vector<int> others;
    for (int member : members)
      if (member != rank_ && member >= 0 && member < world_size_ &&
          std::find(others.begin(), others.end(), member) == others.end())
        others.push_back(member);
    if (!others.empty()) group_notifier_(group, std::move(others), reason);
  } catch (const std::exception& error) {
    // Out of memory, or the actor system is gone: the group still failed here, and the others
    // end at their deadlines.
    try {
      history_.log("rank " + std::to_string(rank_) + ": could not announce the failure of group " +
                   std::to_string(group) + ": " + error.what());
    } catch (...) {
    }
  } catch (...) {
  }
}

bool RankContext::group_failed(std::uint32_t group, const std::string& reason) noexcept {
  try {
    if (group_failures_.record(group, reason)) return true;
    if (group_failures_.full() && group_failures_.reason(group).empty())
      history_.log("rank " + std::to_string(rank_) + ": dropped the failure of group " +
                   std::to_string(group) + " (" + reason + "): already " +
                   std::to_string(GroupFailures::kMaxGroups) + " failed groups recorded");
  } catch (...) {
  }
  return false;
}

void RankContext::fail(const std::string& reason) {
  links_.fail(reason);
  rings_.fail(reason);
}

}  // namespace rankmesh
