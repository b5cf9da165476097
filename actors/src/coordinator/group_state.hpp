// GroupState: what one rank knows about one of its groups — who the members are, the sequence
// numbers that match its messages, and what its operations remember between calls. The
// GroupCoordinator facade owns one; every collective works on it through a Call.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "coordinator/collective_request.hpp"
#include "rankmesh/group_coordinator.hpp"
#include "rankmesh/layout.hpp"
#include "rank/op_history.hpp"
#include "schema_cache.hpp"

namespace rankmesh {

class RankContext;
struct ObjectRings;

// The sequence numbers that pair this rank's messages with its peers' (matcher.hpp).
struct SequenceNumbers {
  explicit SequenceNumbers(std::size_t members)
      : sent(members, 0), received(members, 0), collectives_heard(members, 0) {}
  // Point-to-point, per peer (group rank): the next send to it, the next receive from it.
  std::vector<std::uint64_t> sent;
  std::vector<std::uint64_t> received;
  // The group's next collective.
  std::uint64_t collective = 0;
  // Per member (group rank): the number after the last collective this rank received a message
  // of from it — who is behind, for the watchdog.
  std::vector<std::uint64_t> collectives_heard;

  // Collectives that ended in an error here (numbers first .. end-1): a message of one of them
  // may still come, late, and is discarded. A late message of any other collective was never
  // expected — the members' collectives diverged (a second broadcast source, another gather
  // root). The newest kMaxUnfinished ranges are kept; older numbers all count as unfinished.
  void note_unfinished(std::uint64_t first, std::uint64_t end);
  bool unfinished(std::uint64_t seq) const noexcept;
  static constexpr std::size_t kMaxUnfinished = 64;

private:
  std::vector<std::pair<std::uint64_t, std::uint64_t>> unfinished_;
  std::uint64_t forgotten_below_ = 0;
};

// What this rank asked for in its last few collectives that completed, by number: named when a
// late message shows that another member asked for something else then.
class RecentRequests {
public:
  void remember(std::uint64_t first, std::uint64_t end, std::span<const std::uint8_t> trailer);
  // The request of collective `seq` described (CollectiveRequest::describe); empty when it is
  // not among the remembered ones.
  std::string describe(std::uint64_t seq) const;
  static constexpr std::size_t kRemembered = 8;

private:
  struct Entry {
    std::uint64_t first = 0, end = 0;
    std::array<std::uint8_t, CollectiveRequest::kMaxBody + 1> bytes{};
    std::size_t size = 0;
  };
  std::array<Entry, kRemembered> entries_{};
  std::size_t next_ = 0;
};

struct GroupState {
  GroupState(std::shared_ptr<RankContext> rank, GroupKind kind, int index, Group members);
  ~GroupState();
  GroupState(const GroupState&) = delete;
  GroupState& operator=(const GroupState&) = delete;

  int size() const noexcept { return static_cast<int>(members.size()); }
  int global_rank(int group_rank) const noexcept {
    return members[static_cast<std::size_t>(group_rank)];
  }

  const std::shared_ptr<RankContext> rank_context;  // this rank's side of the data plane
  const GroupKind kind;
  const int index;
  const std::uint32_t id;  // in every frame's header (RankContext::group_id)
  const Group members;     // global ranks, by group rank
  const std::string name;  // "tp:0"
  const OpHistory::GroupLabel history_label;  // the name as the rank's op history keeps it
  const int rank_in_group;
  std::chrono::nanoseconds timeout;

  SequenceNumbers sequences;
  RecentRequests recent_requests;
  // Tensor-dict schemas cached per peer and direction (schema_cache.hpp): a rebuilt group
  // starts with none.
  SchemaCaches schemas;
  // send-allgather: whether any link from the members of an all-gather group to their peers
  // leaves the node, by (all-gather group id, destination group rank), agreed on first use.
  std::map<std::pair<std::uint32_t, int>, bool> links_leave_node;
  // broadcast_object's shared-memory rings to and from same-node members, made on first use.
  std::unique_ptr<ObjectRings> object_rings;
  // Debug builds: the thread inside this group's operations, to detect two at once (Call).
  std::atomic<std::thread::id> user{};
};

// The public GroupCoordinator's hidden half is its group's state.
struct GroupCoordinator::Impl : GroupState {
  using GroupState::GroupState;
};

// What a GroupCoordinator is made from (runtime, parallel state, tests).
inline std::unique_ptr<GroupCoordinator::Impl> make_group_state(std::shared_ptr<RankContext> rank,
                                                                GroupKind kind, int index,
                                                                Group members) {
  return std::make_unique<GroupCoordinator::Impl>(std::move(rank), kind, index, std::move(members));
}

}  // namespace rankmesh
