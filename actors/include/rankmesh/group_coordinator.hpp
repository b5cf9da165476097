// GroupCoordinator: one rank's handle on one group (vLLM's GroupCoordinator), with every
// operation an engine calls on it.
//
// Semantics:
// - Threads. Each rank is driven by its engine thread. A GroupCoordinator is used from one
//   thread at a time (debug builds detect two threads inside one coordinator and throw).
// - Ranks passed to operations are group-local (0 .. world_size()-1).
// - Order. The operations of one rank run in the order they are issued, whether blocking or
//   asynchronous, like work on one stream: an asynchronous operation runs on the rank's
//   communication thread, and a blocking call issued while some are pending runs after them.
// - Matching. Point-to-point messages are FIFO per (group, src, dst); collectives must be issued
//   in the same order on every member. Every message carries the group's sequence number and its
//   operation, so a mismatch (different operation, different order) is an Error(mismatch) naming
//   both sides. A message that arrives after its receive timed out is discarded, never delivered
//   to a later receive. A send that fails keeps its place in the order too: the receive paired
//   with it times out or fails with an Error(mismatch) naming both sides, and the next receive
//   gets the next message.
// - Timeouts. Every blocking call gives up after timeout() with an Error(timeout) naming the
//   group, the peer and what it waited for; the coordinator stays usable.
// - Objects are plain codec values (None, bool, int, float, string, bytes, lists of these).
// - Memory. A tensor handed to a send is not modified until the send completes. The inproc
//   transport shares a tensor's memory only when the caller donates it (moves it in: the
//   `TensorDict&&` overloads); otherwise the receiver gets a copy.
// - Results of reductions equal a one-rank computation element by element: inputs are combined
//   in ascending group-rank order, f16/bf16 accumulate in f32, fp8 and bool are refused.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "rankmesh/graph_capture.hpp"
#include "rankmesh/handle.hpp"
#include "rankmesh/layout.hpp"
#include "rankmesh/reduce_op.hpp"
#include "rankmesh/tensor_dict.hpp"

namespace rankmesh {

class RankContext;

// Which tensors of a dict may travel as slices under send-allgather, by key: true forces
// slicing, false forces sending whole. A key not listed may be sliced when its element count
// divides by the all-gather group's size; the senders slice it only where that is faster — at
// least 1 MiB, the all-gather group on one node and a peer of one of its members on another —
// and all of them alike (they agree once per all-gather group and destination, on the first
// send with them). The receiver follows the sender (its own map must allow what arrives).
using AllGatherTensors = std::map<std::string, bool, std::less<>>;

// Where a received tensor dict's tensors go: the caller's preallocated tensors by key (checked
// against the metadata), the rest allocated fresh.
using RecvInto = std::map<std::string, Tensor, std::less<>>;

class GroupCoordinator {
public:
  GroupCoordinator(std::shared_ptr<RankContext> rank, GroupKind kind, int group_index, Group ranks);
  ~GroupCoordinator();
  GroupCoordinator(const GroupCoordinator&) = delete;
  GroupCoordinator& operator=(const GroupCoordinator&) = delete;

  // --- properties
  const Group& ranks() const noexcept { return ranks_; }
  int rank() const noexcept;  // this rank's global rank
  int rank_in_group() const noexcept { return rank_in_group_; }
  int world_size() const noexcept { return static_cast<int>(ranks_.size()); }
  int local_rank() const noexcept;  // index of this rank's device on its node
  int first_rank() const noexcept { return ranks_.front(); }
  int last_rank() const noexcept { return ranks_.back(); }
  bool is_first_rank() const noexcept { return rank() == first_rank(); }
  bool is_last_rank() const noexcept { return rank() == last_rank(); }
  int next_rank() const noexcept { return ranks_[(rank_in_group_ + 1) % ranks_.size()]; }
  int prev_rank() const noexcept {
    return ranks_[(rank_in_group_ + ranks_.size() - 1) % ranks_.size()];
  }
  const std::string& unique_name() const noexcept { return name_; }  // "tp:0"
  GroupKind kind() const noexcept { return kind_; }

  // A graph-capture scope for this group: a side stream (`stream`, to share one with other
  // groups, or a fresh host stream) that first waits on the current stream and is current inside
  // the scope.
  GraphCapture graph_capture(std::shared_ptr<Stream> stream = nullptr) const;

  // Why this rank has failed — a lost peer, an abort — or "" while it stands. Once failed, every
  // pending and later operation of the rank fails with that reason.
  std::string failure() const;

  std::chrono::nanoseconds timeout() const noexcept { return timeout_; }
  void set_timeout(std::chrono::nanoseconds timeout) noexcept { timeout_ = timeout; }

  // --- objects
  void send_object(const Value& object, int dst);
  Value recv_object(int src);
  // Returns the object of group rank `src` on every member.
  Value broadcast_object(const Value& object, int src);

  // --- tensor dicts (dst/src default to next/prev rank in the group)
  void send_tensor_dict(const TensorDict& dict, std::optional<int> dst = std::nullopt,
                        GroupCoordinator* all_gather_group = nullptr,
                        const AllGatherTensors& all_gather_tensors = {});
  // Donating form: the receiver may share the tensors' memory (inproc: zero copies).
  void send_tensor_dict(TensorDict&& dict, std::optional<int> dst = std::nullopt,
                        GroupCoordinator* all_gather_group = nullptr,
                        const AllGatherTensors& all_gather_tensors = {});
  TensorDict recv_tensor_dict(std::optional<int> src = std::nullopt,
                              GroupCoordinator* all_gather_group = nullptr,
                              const AllGatherTensors& all_gather_tensors = {},
                              const RecvInto& into = {});
  TensorDict broadcast_tensor_dict(const TensorDict& dict, int src);

  // --- collectives
  Tensor all_reduce(const Tensor& input, ReduceOp op = ReduceOp::sum);
  Tensor all_gather(const Tensor& input, int dim = 0);
  // Sizes along `dim` may differ between ranks.
  Tensor all_gatherv(const Tensor& input, int dim = 0);
  Tensor reduce_scatter(const Tensor& input, int dim = 0, ReduceOp op = ReduceOp::sum);
  // Rank i gets sizes[i] rows along `dim`; the sizes sum to input.shape()[dim].
  Tensor reduce_scatterv(const Tensor& input, std::span<const std::int64_t> sizes, int dim = 0,
                         ReduceOp op = ReduceOp::sum);
  // On `dst` the concatenation along `dim`; elsewhere an undefined tensor.
  Tensor gather(const Tensor& input, int dst = 0, int dim = 0);
  Tensor broadcast(const Tensor& input, int src = 0);
  void barrier();
  // Splits `input` along dim 0 into send_counts[i] rows for rank i; returns the rows received,
  // concatenated in rank order. The counts each rank receives come with the data.
  Tensor all_to_all(const Tensor& input, std::span<const std::int64_t> send_counts);

  // --- asynchronous forms (see "Order" above): any operation, run on the rank's stream.
  // `op(*this)` runs after everything issued before it; the handle gives its result or error.
  // Arguments the operation uses must stay alive until it has run (capture them by value).
  //   auto sum = tp.async([t](GroupCoordinator& g) { return g.all_reduce(t); });
  template <class Op>
  auto async(Op op) -> Handle<std::invoke_result_t<Op&, GroupCoordinator&>>;

  Handle<void> async_send_tensor_dict(TensorDict dict, std::optional<int> dst = std::nullopt) {
    return async([dict = std::move(dict), dst](GroupCoordinator& g) mutable {
      g.send_tensor_dict(std::move(dict), dst);  // owned by the operation: donated
    });
  }
  Handle<TensorDict> async_recv_tensor_dict(std::optional<int> src = std::nullopt) {
    return async([src](GroupCoordinator& g) { return g.recv_tensor_dict(src); });
  }
  Handle<Tensor> async_all_reduce(Tensor input, ReduceOp op = ReduceOp::sum) {
    return async([input = std::move(input), op](GroupCoordinator& g) { return g.all_reduce(input, op); });
  }
  Handle<Tensor> async_all_gather(Tensor input, int dim = 0) {
    return async([input = std::move(input), dim](GroupCoordinator& g) { return g.all_gather(input, dim); });
  }
  Handle<void> async_barrier() {
    return async([](GroupCoordinator& g) { g.barrier(); });
  }

private:
  friend class GroupOps;
  void submit(std::function<void()> work);
  int next_rank_in_group() const noexcept;
  int prev_rank_in_group() const noexcept;

  std::shared_ptr<RankContext> context_;
  GroupKind kind_;
  int group_index_;
  std::uint32_t group_id_;
  Group ranks_;
  int rank_in_group_;
  std::string name_;
  std::chrono::nanoseconds timeout_;
  // Matching state: p2p sequence numbers per peer (group-local), the collective sequence number.
  std::vector<std::uint64_t> send_seq_;
  std::vector<std::uint64_t> recv_seq_;
  std::uint64_t collective_seq_ = 0;
  // send-allgather: whether any link from the members of an all-gather group to their peers
  // leaves the node, by (all-gather group id, destination group rank), agreed on first use.
  std::map<std::pair<std::uint32_t, int>, bool> links_leave_node_;
  // broadcast_object's shared-memory rings to and from same-node members, made on first use.
  struct BroadcastRings;
  std::unique_ptr<BroadcastRings> rings_;
  // Debug builds: the thread inside this coordinator, to detect use from two threads at once.
  std::atomic<std::thread::id> user_{};
};

template <class Op>
auto GroupCoordinator::async(Op op) -> Handle<std::invoke_result_t<Op&, GroupCoordinator&>> {
  using T = std::invoke_result_t<Op&, GroupCoordinator&>;
  auto state = std::make_shared<detail::Op<T>>();
  submit([this, state, op = std::move(op)]() mutable {
    try {
      if constexpr (std::is_void_v<T>) {
        op(*this);
      } else {
        state->value.emplace(op(*this));
      }
      state->finish(nullptr);
    } catch (...) {
      state->finish(std::current_exception());
    }
  });
  return Handle<T>(std::move(state));
}

}  // namespace rankmesh
