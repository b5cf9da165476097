#include "cuda_compute.hpp"

#include <cstring>
#include <exception>
#include <string>

#include "kernels.hpp"
#include "rankmesh/error.hpp"

namespace pipeline {
namespace {

float* floats(const rankmesh::Tensor& t) { return t.data_as<float>(); }

}  // namespace

CudaCompute::CudaCompute(rankmesh::CudaBackend& backend, const ModelShape& m, int first_layer,
                         int last_layer, int tp_rank, int tp, std::chrono::milliseconds timeout)
    : backend_(backend),
      m_(m),
      tp_(tp),
      timeout_(timeout),
      stream_(backend.create_stream()),
      guard_(*stream_),
      native_(rankmesh::CudaBackend::native_stream(*stream_)) {
  const int part = m.ffn / tp;
  for (int layer = first_layer; layer < last_layer; ++layer) {
    LayerShard host = layer_shard(m, layer, tp_rank, tp);
    weight_bytes_ += (host.w1.size() + host.w2.size()) * sizeof(float);
    rankmesh::Tensor w1 = upload(host.w1, m.hidden, part);
    shards_.push_back({std::move(w1), upload(host.w2, part, m.hidden)});
  }
  for (const Shard& shard : shards_) {
    order_after(shard.w1.ready_event());
    order_after(shard.w2.ready_event());
  }
  retire();
}

CudaCompute::~CudaCompute() {
  try {
    finish();
  } catch (const std::exception&) {
    // After the rank's own finish() this returns at once; it throws only on a failed run, whose
    // rank already reports the error this stream's failure follows from.
  }
}

void CudaCompute::input(int index, rankmesh::Tensor& hidden, rankmesh::Tensor& residual) {
  hidden = upload(pipeline::input(m_, index), m_.tokens, m_.hidden);
  residual = fresh(m_.tokens, m_.hidden);
  kernels::zero(floats(residual), residual.numel(), native_);
  residual.set_ready_event(stream_->record());
  retire();
}

rankmesh::Tensor CudaCompute::layer(int layer, const rankmesh::Tensor& hidden,
                                    rankmesh::Tensor& residual) {
  const Shard& shard = shards_.at(static_cast<std::size_t>(layer));
  const int part = m_.ffn / tp_;
  // Out of place: `residual` may be a received tensor other ranks read too.
  rankmesh::Tensor summed = fresh(m_.tokens, m_.hidden);
  kernels::add(floats(use(residual)), floats(use(hidden)), floats(summed), summed.numel(), native_);
  summed.set_ready_event(stream_->record());
  rankmesh::Tensor inner = fresh(m_.tokens, part);
  kernels::matmul(floats(summed), floats(shard.w1), floats(inner), m_.tokens, m_.hidden, part,
                  native_);
  kernels::activate(floats(inner), inner.numel(), native_);
  rankmesh::Tensor partial = fresh(m_.tokens, m_.hidden);
  kernels::matmul(floats(inner), floats(shard.w2), floats(partial), m_.tokens, part, m_.hidden,
                  native_);
  partial.set_ready_event(stream_->record());
  residual = std::move(summed);
  retire();
  return partial;
}

Matrix CudaCompute::output(const rankmesh::Tensor& hidden, const rankmesh::Tensor& residual) {
  rankmesh::Tensor sum = fresh(m_.tokens, m_.hidden);
  kernels::add(floats(use(hidden)), floats(use(residual)), floats(sum), sum.numel(), native_);
  sum.set_ready_event(stream_->record());
  // Pinned, so the copy is the stream's own (pageable memory would go through its thread); the
  // one wait for results is on this copy's event, not on the device.
  rankmesh::Tensor staging = backend_.allocate_pinned(sum.shape(), rankmesh::DType::f32);
  backend_.copy_to_host(sum, staging.data(), *stream_)->synchronize(timeout_);
  retire();
  return Matrix(staging.data_as<float>(), staging.data_as<float>() + staging.numel());
}

void CudaCompute::finish() {
  retire();
  // Everything enqueued on the stream so far — ours and rankmesh's copies — before the weights,
  // the held tensors and the stream itself go away.
  stream_->record()->synchronize(timeout_);
  retired_.clear();
}

rankmesh::Tensor CudaCompute::fresh(int rows, int cols) {
  rankmesh::Tensor t = backend_.allocate({rows, cols}, rankmesh::DType::f32);
  pending_.tensors.push_back(t);
  return t;
}

rankmesh::Tensor CudaCompute::upload(const Matrix& host, int rows, int cols) {
  // Through pinned memory: the copy then goes straight onto the CUDA stream, and its event is
  // one the device records (a pageable source is copied by the stream's thread instead).
  rankmesh::Tensor staging = backend_.allocate_pinned({rows, cols}, rankmesh::DType::f32);
  std::memcpy(staging.data(), host.data(), staging.nbytes());
  pending_.tensors.push_back(staging);  // read by the copy until it has run
  rankmesh::Tensor t = fresh(rows, cols);
  backend_.copy_from_host(staging.data(), t, *stream_);  // sets t's ready event
  return t;
}

const rankmesh::Tensor& CudaCompute::use(const rankmesh::Tensor& t) {
  const rankmesh::Device want = backend_.device();
  if (t.device() != want || t.dtype() != rankmesh::DType::f32 ||
      t.numel() != static_cast<std::int64_t>(m_.tokens) * m_.hidden)
    throw rankmesh::Error(rankmesh::Errc::mismatch,
                          "expected a " + std::to_string(m_.tokens) + " x " +
                              std::to_string(m_.hidden) + " f32 activation on " +
                              rankmesh::to_string(want) + ", got " +
                              std::to_string(t.numel()) + " elements on " +
                              rankmesh::to_string(t.device()));
  order_after(t.ready_event());
  pending_.tensors.push_back(t);
  return t;
}

// The kernels go straight onto the CUDA stream, past the host-side items rankmesh's stream may
// still hold (a wait on an event that completes on the host, a copy staged by its thread), so
// Stream::wait cannot order them: an event the device records is waited on by the device, one
// that completes on the host (no native handle) is waited on here, within the timeout.
void CudaCompute::order_after(const std::shared_ptr<rankmesh::Event>& ready) {
  if (!ready) return;
  if (ready->query()) {
    if (auto error = ready->error()) std::rethrow_exception(error);
  } else if (void* native = ready->native_handle()) {
    kernels::wait(native_, native);
  } else {
    ready->synchronize(timeout_);
  }
}

void CudaCompute::retire() {
  while (!retired_.empty() && retired_.front().done->query()) retired_.pop_front();
  if (pending_.tensors.empty()) return;
  pending_.done = stream_->record();
  retired_.push_back(std::move(pending_));
  pending_ = {};
}

}  // namespace pipeline
