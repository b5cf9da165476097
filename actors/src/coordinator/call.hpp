// Call: one operation on one group, from its start to its return — its deadline, the guard
// against a second thread inside the group, and the words its errors use ("tp:0 group rank 1
// (rank 3) all_gather"). Every collective makes one first; the matcher and the payload helpers
// take it.
#pragma once

#include <chrono>
#include <exception>
#include <optional>
#include <utility>
#include <string>

#include "coordinator/collective_request.hpp"
#include "coordinator/group_state.hpp"
#include "deadline.hpp"
#include "frame.hpp"
#include "rank_context.hpp"
#include "rankmesh/error.hpp"
#include "trace_ring.hpp"

namespace rankmesh {

class Call {
public:
  // Waits for the rank's earlier asynchronous operations (issue order), then starts `operation`.
  Call(GroupState& group, const char* operation);
  ~Call();
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  GroupState& group() const noexcept { return group_; }
  RankContext& rank() const noexcept { return rank_; }
  int rank_in_group() const noexcept { return group_.rank_in_group; }
  int size() const noexcept { return group_.size(); }
  Deadline deadline() const noexcept { return deadline_; }
  // Time left until the deadline, never negative.
  std::chrono::nanoseconds left() const;
  // The rank's frame for this call's messages (operations of a rank run one at a time).
  Frame& frame() const noexcept { return rank_.scratch(); }

  // "group rank 1 (rank 3)"
  std::string who(int group_rank) const;
  // "tp:0 group rank 1 (rank 3) all_gather": how errors start.
  std::string where() const;
  // where(), built only when asked: what the rank's channels say a failed message belonged to.
  const RankContext::Describe& describe() const noexcept { return describe_; }

  // A group rank passed by the caller; Error(invalid_argument) outside the group (or, for
  // check_other_peer, this rank itself). Returns it.
  int check_peer(int group_rank, const char* role) const {
    if (group_rank < 0 || group_rank >= size()) [[unlikely]] refuse_peer(group_rank, role);
    return group_rank;
  }
  int check_other_peer(int group_rank, const char* role) const {
    if (group_rank < 0 || group_rank >= size() || group_rank == rank_in_group()) [[unlikely]]
      refuse_peer(group_rank, role);
    return group_rank;
  }
  // A dimension of `tensor` passed by the caller: negative ones count from the end (-1: the
  // last). Returns it as 0 .. rank-1; Error(invalid_argument) outside the tensor.
  int resolve_dim(const Tensor& tensor, int dim) const;
  // A payload that does not fit what this rank expects: the ranks passed different tensors.
  Error payload_mismatch(int src, const Tensor& got, const std::string& expected) const;

  // What this rank asks of the collective this call makes: every message of it carries the
  // request, and every message received is checked against it (matcher.hpp). A collective
  // states it before its first message.
  void ask(const CollectiveRequest& request) {
    request_.emplace(request);
    request_->trailer();  // laid out now, while the caller's CallSite (its tag) is alive
  }
  const CollectiveRequest& request() const;

  // When a receive still waiting logs who it waits for (coordinator/watchdog.hpp): the
  // watchdog's fraction of the group's timeout after the call began; the deadline when off.
  Deadline watchdog_point() const noexcept;
  // True the first time only: the watchdog speaks once per call.
  bool claim_watchdog() const noexcept { return !std::exchange(watchdog_spoke_, true); }

  // Whether this call is recorded on the rank's timeline (rank/tracer.hpp): decided when it
  // starts, so that off costs one branch per call and per message.
  bool tracing() const noexcept { return trace_.has_value(); }
  // One message of this call, for its timeline event: message `seq`, to or from global rank
  // `peer`, `bytes` of payload.
  void trace_message(std::uint64_t seq, int peer, bool sent, std::size_t bytes) const noexcept;

private:
  // The failures of the checks every call makes, out of line: the hot path stays small.
  [[noreturn, gnu::cold, gnu::noinline]] void refuse_peer(int group_rank, const char* role) const;
  [[gnu::cold, gnu::noinline]] void refuse_if_group_failed() const;
  void begin_trace() noexcept;
  void end_trace() noexcept;

  GroupState& group_;
  RankContext& rank_;
  const char* operation_;
  Deadline deadline_;
  // describe()'s callable: the call's where().
  struct Where {
    const Call* call;
    std::string operator()() const { return call->where(); }
  } where_{this};
  RankContext::Describe describe_{where_};
  bool guarded_ = false;
  mutable std::optional<TraceEvent> trace_;  // filled by messages of a call the matcher sees as const
  std::optional<CollectiveRequest> request_;
  int uncaught_at_start_ = 0;  // a traced call left by an exception is marked failed
  // The collective numbers this call takes start here: noted as unfinished if it fails
  // (SequenceNumbers::note_unfinished), its request remembered if it completes.
  std::uint64_t collective_at_start_ = group_.sequences.collective;
  mutable bool watchdog_spoke_ = false;
};

// "250 ms"
std::string milliseconds_text(std::chrono::nanoseconds duration);

}  // namespace rankmesh
