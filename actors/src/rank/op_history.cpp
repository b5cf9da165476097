#include "rank/op_history.hpp"

#include <algorithm>
#include <cstring>

#include "op_code.hpp"

namespace rankmesh {

OpHistory::GroupLabel OpHistory::label_of(const std::string& group) noexcept {
  GroupLabel label{};
  std::memcpy(label.data(), group.data(), std::min(group.size(), label.size() - 1));
  return label;
}

void OpHistory::record(std::uint32_t op, const GroupLabel& group, int peer, bool sent,
                       std::uint64_t seq, std::size_t bytes) noexcept {
  Entry& entry = entries_[recorded_++ % kEntries];
  entry.op = op;
  entry.group = group;
  entry.peer = peer;
  entry.sent = sent;
  entry.seq = seq;
  entry.bytes = bytes;
}

std::string OpHistory::last_from(int peer) const {
  const std::uint64_t first = recorded_ > kEntries ? recorded_ - kEntries : 0;
  for (std::uint64_t i = recorded_; i > first; --i) {
    const Entry& entry = entries_[(i - 1) % kEntries];
    if (entry.peer == peer && !entry.sent)
      return std::string(op_name(entry.op)) + " #" + std::to_string(entry.seq) + " on " +
             entry.group.data();
  }
  return "";
}

Error OpHistory::reported(Error error) const {
  std::string text = std::string(error.what()) + "\n  last operations of rank " +
                     std::to_string(rank_) + " (oldest first):";
  const std::uint64_t first = recorded_ > kEntries ? recorded_ - kEntries : 0;
  for (std::uint64_t i = first; i < recorded_; ++i) {
    const Entry& entry = entries_[i % kEntries];
    text += "\n    " + std::string(op_name(entry.op)) + " #" + std::to_string(entry.seq) + " on " +
            entry.group.data() + (entry.sent ? ": sent " : ": received ") +
            std::to_string(entry.bytes) + " payload bytes " + (entry.sent ? "to" : "from") + " rank " + std::to_string(entry.peer);
  }
  if (first == recorded_) text += " none";
  log(text);
  if (observer_) observer_(error);
  return error;
}

}  // namespace rankmesh
