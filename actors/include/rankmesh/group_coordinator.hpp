// GroupCoordinator: one rank's handle on one group (vLLM's GroupCoordinator), with every
// operation an engine calls on it. What the operations promise — threads, order, matching,
// timeouts, memory, reductions — is in docs/semantics.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "rankmesh/graph_capture.hpp"
#include "rankmesh/handle.hpp"
#include "rankmesh/layout.hpp"
#include "rankmesh/reduce_op.hpp"
#include "rankmesh/tensor_dict.hpp"

namespace rankmesh {

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
  // What the coordinator holds; made by the runtime (ParallelState::world(), tp(), ...).
  struct Impl;
  explicit GroupCoordinator(std::unique_ptr<Impl> impl);
  ~GroupCoordinator();
  GroupCoordinator(const GroupCoordinator&) = delete;
  GroupCoordinator& operator=(const GroupCoordinator&) = delete;

  // --- properties
  const Group& ranks() const noexcept;  // global ranks, by group rank
  int rank() const noexcept;            // this rank's global rank
  int rank_in_group() const noexcept;
  int world_size() const noexcept;
  int local_rank() const noexcept;  // index of this rank's device on its node
  int first_rank() const noexcept { return ranks().front(); }
  int last_rank() const noexcept { return ranks().back(); }
  bool is_first_rank() const noexcept { return rank() == first_rank(); }
  bool is_last_rank() const noexcept { return rank() == last_rank(); }
  int next_rank() const noexcept;  // global rank of the next member, wrapping around
  int prev_rank() const noexcept;  // ... of the previous one
  const std::string& unique_name() const noexcept;  // "tp:0"
  GroupKind kind() const noexcept;

  // A graph-capture scope for this group: a side stream (`stream`, to share one with other
  // groups, or a fresh stream of the rank's device — a CUDA stream on a GPU rank — else of the
  // host) that first waits on the current stream and is current inside the scope. Operations
  // that stage device bytes through the host (collectives on device tensors, tensor dicts to
  // other processes) cannot be captured: issued during a CUDA capture they fail with
  // Error(device) naming the operation.
  GraphCapture graph_capture(std::shared_ptr<Stream> stream = nullptr) const;

  // Why this rank has failed — a lost peer, an abort — or "" while it stands. Once failed, every
  // pending and later operation of the rank fails with that reason.
  std::string failure() const;

  std::chrono::nanoseconds timeout() const noexcept;
  void set_timeout(std::chrono::nanoseconds timeout) noexcept;

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

  // --- collectives. `dim` counts from the end when negative: -1 (the default, as in vLLM) is
  // the last dimension.
  Tensor all_reduce(const Tensor& input, ReduceOp op = ReduceOp::sum);
  Tensor all_gather(const Tensor& input, int dim = -1);
  // Sizes along `dim` may differ between ranks.
  Tensor all_gatherv(const Tensor& input, int dim = -1);
  Tensor reduce_scatter(const Tensor& input, int dim = -1, ReduceOp op = ReduceOp::sum);
  // Rank i gets sizes[i] rows along `dim`; the sizes sum to input.shape()[dim].
  Tensor reduce_scatterv(const Tensor& input, std::span<const std::int64_t> sizes, int dim = -1,
                         ReduceOp op = ReduceOp::sum);
  // On `dst` the concatenation along `dim`; elsewhere an undefined tensor.
  Tensor gather(const Tensor& input, int dst = 0, int dim = -1);
  // In place, as vLLM's broadcast: `src`'s tensor is copied into `tensor` on every other
  // member (same shape and dtype, else Error(mismatch); an undefined `tensor` becomes the
  // tensor received). Returns `tensor`.
  Tensor broadcast(Tensor& tensor, int src = 0);
  void barrier();
  // Splits `input` along dim 0 into send_counts[i] rows for rank i; returns the rows received,
  // concatenated in rank order. The counts each rank receives come with the data.
  Tensor all_to_all(const Tensor& input, std::span<const std::int64_t> send_counts);

  // --- asynchronous forms (docs/semantics.md, "Order"): any operation, run on the rank's stream.
  // `op(*this)` runs after everything issued before it; the handle gives its result or error.
  // Arguments the operation uses must stay alive until it has run (capture them by value).
  //   auto sum = tp.async([t](GroupCoordinator& group) { return group.all_reduce(t); });
  template <class Op>
  auto async(Op op) -> Handle<std::invoke_result_t<Op&, GroupCoordinator&>>;

  Handle<void> async_send_tensor_dict(TensorDict dict, std::optional<int> dst = std::nullopt) {
    return async([dict = std::move(dict), dst](GroupCoordinator& group) mutable {
      group.send_tensor_dict(std::move(dict), dst);  // owned by the operation: donated
    });
  }
  Handle<TensorDict> async_recv_tensor_dict(std::optional<int> src = std::nullopt) {
    return async([src](GroupCoordinator& group) { return group.recv_tensor_dict(src); });
  }
  Handle<Tensor> async_all_reduce(Tensor input, ReduceOp op = ReduceOp::sum) {
    return async([input = std::move(input), op](GroupCoordinator& group) { return group.all_reduce(input, op); });
  }
  Handle<Tensor> async_all_gather(Tensor input, int dim = -1) {
    return async([input = std::move(input), dim](GroupCoordinator& group) { return group.all_gather(input, dim); });
  }
  Handle<void> async_barrier() {
    return async([](GroupCoordinator& group) { group.barrier(); });
  }

private:
  // Runs `work` on the rank's host stream after everything issued before it.
  void submit(std::function<void()> work);

  std::unique_ptr<Impl> impl_;
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
