// GroupFailures: the groups of one rank that have failed as a whole (issue 13, "collective
// consensus"): a member that sees the group's collectives diverge fails the group, and every
// other member learns it through the control plane (RankContext::fail_group / group_failed). The
// group's pending and later operations on this rank fail with the reason. Written by the engine
// thread that detects and by the rank actor that receives notices; read by every receive while
// it waits (coordinator/watchdog.cpp), so the common case — no group ever failed — is one relaxed
// load. CAF-free.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace rankmesh {

class GroupFailures {
public:
  // At most this many failed groups are remembered: a world rebuilds its groups (new ids) a few
  // times, and a notice names one group. Beyond it, notices are refused (record() says so).
  static constexpr std::size_t kMaxGroups = 4096;

  // Notes that `group` failed with `reason`. True when this is news (the group stood until now);
  // false when it had failed already (the first reason stays) or the table is full.
  bool record(std::uint32_t group, const std::string& reason);
  // Why `group` failed; empty while it stands. One relaxed load while no group ever failed.
  std::string reason(std::uint32_t group) const {
    if (!any_.load(std::memory_order_relaxed)) return {};
    return lookup(group);
  }
  bool any() const noexcept { return any_.load(std::memory_order_relaxed); }
  bool full() const;

private:
  std::string lookup(std::uint32_t group) const;

  std::atomic<bool> any_{false};
  mutable std::mutex mutex_;
  std::map<std::uint32_t, std::string> failed_;
};

}  // namespace rankmesh
