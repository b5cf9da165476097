#include "rank/group_failures.hpp"

namespace rankmesh {

bool GroupFailures::record(std::uint32_t group, const std::string& reason) {
  std::lock_guard lock(mutex_);
  if (failed_.count(group) || failed_.size() >= kMaxGroups) return false;
  failed_.emplace(group, reason.empty() ? std::string("(no reason given)") : reason);
  // Published after the entry: a reader that sees the flag and takes the lock finds it.
  any_.store(true, std::memory_order_release);
  return true;
}

bool GroupFailures::full() const {
  std::lock_guard lock(mutex_);
  return failed_.size() >= kMaxGroups;
}

std::string GroupFailures::lookup(std::uint32_t group) const {
  std::lock_guard lock(mutex_);
  auto it = failed_.find(group);
  return it == failed_.end() ? std::string() : it->second;
}

}  // namespace rankmesh
