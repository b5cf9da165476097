// GroupCoordinator: the facade. Every operation forwards to its file under collectives/.
#include "rankmesh/group_coordinator.hpp"

#include <string>
#include <string_view>

#include "rankmesh/call_site.hpp"

#include "collectives/collectives.hpp"
#include "coordinator/device_staging.hpp"
#include "coordinator/group_state.hpp"
#include "rank_context.hpp"

namespace rankmesh {
GroupCoordinator::GroupCoordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GroupCoordinator::~GroupCoordinator() = default;

const Group& GroupCoordinator::ranks() const noexcept { return impl_->members; }
int GroupCoordinator::rank() const noexcept { return impl_->rank_context->rank(); }
int GroupCoordinator::rank_in_group() const noexcept { return impl_->rank_in_group; }
int GroupCoordinator::world_size() const noexcept { return impl_->size(); }
int GroupCoordinator::local_rank() const noexcept { return impl_->rank_context->local_rank(); }
int GroupCoordinator::next_rank() const noexcept {
  return impl_->global_rank((impl_->rank_in_group + 1) % impl_->size());
}
int GroupCoordinator::prev_rank() const noexcept {
  return impl_->global_rank((impl_->rank_in_group + impl_->size() - 1) % impl_->size());
}
const std::string& GroupCoordinator::unique_name() const noexcept { return impl_->name; }
GroupKind GroupCoordinator::kind() const noexcept { return impl_->kind; }
std::chrono::nanoseconds GroupCoordinator::timeout() const noexcept { return impl_->timeout; }
void GroupCoordinator::set_timeout(std::chrono::nanoseconds timeout) noexcept {
  impl_->timeout = timeout;
}
std::string GroupCoordinator::failure() const { return impl_->rank_context->failure(); }

GraphCapture GroupCoordinator::graph_capture(std::shared_ptr<Stream> stream) const {
  if (stream) return GraphCapture(std::move(stream));
  // A side stream of the rank's device (a CUDA stream on a GPU rank), else of the host.
  for (DeviceType type : {DeviceType::cuda, DeviceType::npu, DeviceType::xpu})
    if (DeviceBackend* backend = impl_->rank_context->backend_of_type(type))
      return GraphCapture(*backend);
  return GraphCapture();
}

void GroupCoordinator::send_object(const Value& object, int dst) {
  collectives::send_object(*impl_, object, dst);
}
Value GroupCoordinator::recv_object(int src) { return collectives::recv_object(*impl_, src); }
Value GroupCoordinator::broadcast_object(const Value& object, int src) {
  return collectives::broadcast_object(*impl_, object, src);
}

void GroupCoordinator::send_tensor_dict(const TensorDict& dict, std::optional<int> dst,
                                        GroupCoordinator* all_gather_group,
                                        const AllGatherTensors& all_gather_tensors) {
  collectives::send_tensor_dict(*impl_, dict, false, dst,
                                all_gather_group ? all_gather_group->impl_.get() : nullptr,
                                all_gather_tensors);
}
void GroupCoordinator::send_tensor_dict(TensorDict&& dict, std::optional<int> dst,
                                        GroupCoordinator* all_gather_group,
                                        const AllGatherTensors& all_gather_tensors) {
  collectives::send_tensor_dict(*impl_, dict, true, dst,
                                all_gather_group ? all_gather_group->impl_.get() : nullptr,
                                all_gather_tensors);
}
TensorDict GroupCoordinator::recv_tensor_dict(std::optional<int> src,
                                              GroupCoordinator* all_gather_group,
                                              const AllGatherTensors& all_gather_tensors,
                                              const RecvInto& into) {
  return collectives::recv_tensor_dict(
      *impl_, src, all_gather_group ? all_gather_group->impl_.get() : nullptr,
      all_gather_tensors, into);
}
TensorDict GroupCoordinator::broadcast_tensor_dict(const TensorDict& dict, int src) {
  return collectives::broadcast_tensor_dict(*impl_, dict, src);
}

Tensor GroupCoordinator::all_reduce(const Tensor& input, ReduceOp op) {
  return through_host(*impl_, "all_reduce", input,
                      [&](const Tensor& t) { return collectives::all_reduce(*impl_, t, op); });
}
Tensor GroupCoordinator::all_gather(const Tensor& input, int dim) {
  return through_host(*impl_, "all_gather", input,
                      [&](const Tensor& t) { return collectives::all_gather(*impl_, t, dim); });
}
Tensor GroupCoordinator::all_gatherv(const Tensor& input, int dim) {
  return through_host(*impl_, "all_gatherv", input,
                      [&](const Tensor& t) { return collectives::all_gatherv(*impl_, t, dim); });
}
Tensor GroupCoordinator::reduce_scatter(const Tensor& input, int dim, ReduceOp op) {
  return through_host(*impl_, "reduce_scatter", input, [&](const Tensor& t) {
    return collectives::reduce_scatter(*impl_, t, dim, op);
  });
}
Tensor GroupCoordinator::reduce_scatterv(const Tensor& input, std::span<const std::int64_t> sizes,
                                         int dim, ReduceOp op) {
  return through_host(*impl_, "reduce_scatterv", input, [&](const Tensor& t) {
    return collectives::reduce_scatterv(*impl_, t, sizes, dim, op);
  });
}
Tensor GroupCoordinator::gather(const Tensor& input, int dst, int dim) {
  return through_host(*impl_, "gather", input,
                      [&](const Tensor& t) { return collectives::gather(*impl_, t, dst, dim); });
}
Tensor GroupCoordinator::broadcast(Tensor& tensor, int src) {
  if (!on_device(tensor)) return collectives::broadcast(*impl_, tensor, src);
  // In place on the device: the source's bytes staged to host, the receivers' landing there and
  // then copied into their tensor.
  RankContext& rank = *impl_->rank_context;
  const bool source = impl_->rank_in_group == src;
  Tensor host = source ? staged_to_host(rank, tensor, impl_->timeout, "broadcast on " + impl_->name)
                       : rank.backend_for(tensor.device()).allocate_host(tensor.shape(), tensor.dtype());
  Tensor received = collectives::broadcast(*impl_, host, src);
  if (!source) stage_into(rank, received, tensor);
  return tensor;
}
void GroupCoordinator::barrier() { collectives::barrier(*impl_); }
Tensor GroupCoordinator::all_to_all(const Tensor& input, std::span<const std::int64_t> send_counts) {
  return through_host(*impl_, "all_to_all", input, [&](const Tensor& t) {
    return collectives::all_to_all(*impl_, t, send_counts);
  });
}

void GroupCoordinator::submit(std::function<void()> work) {
  // The work runs on the rank's stream thread: its collectives carry the issuing thread's
  // call-site tag, as they would had it run them itself.
  const std::string_view site = CallSite::current();
  if (site.empty()) return impl_->rank_context->submit(std::move(work));
  impl_->rank_context->submit([work = std::move(work), tag = std::string(site)] {
    CallSite issued_at(tag);
    work();
  });
}

}  // namespace rankmesh
