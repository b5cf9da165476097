// CudaCompute: a rank's layers on a GPU (--device cuda). Weights and activations live in device
// memory from the CudaBackend; the model's steps are the kernels of kernels.cu, launched on the
// rank's own stream, and each output tensor carries the event recorded after its kernels, so
// rankmesh (collectives, dict transfers) and later kernels wait on exactly that work — never on
// the whole device.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <vector>

#include "rank_compute.hpp"
#include "rankmesh/cuda_backend.hpp"
#include "rankmesh/event.hpp"
#include "rankmesh/stream.hpp"

namespace pipeline {

class CudaCompute final : public RankCompute {
public:
  // Uploads the shards of layers [first_layer, last_layer) for TP rank `tp_rank` of `tp`, and
  // makes a new stream of `backend` this thread's current one until destruction, so that
  // rankmesh's operations on this rank's device tensors are ordered on it too. Create and
  // destroy it on the rank's thread. `timeout` bounds each wait for the device.
  CudaCompute(rankmesh::CudaBackend& backend, const ModelShape& m, int first_layer, int last_layer,
              int tp_rank, int tp, std::chrono::milliseconds timeout);
  // Waits (within the timeout) for the work still in flight before its memory goes back.
  ~CudaCompute() override;
  CudaCompute(const CudaCompute&) = delete;
  CudaCompute& operator=(const CudaCompute&) = delete;

  std::size_t weight_bytes() const override { return weight_bytes_; }
  void input(int index, rankmesh::Tensor& hidden, rankmesh::Tensor& residual) override;
  rankmesh::Tensor layer(int layer, const rankmesh::Tensor& hidden,
                         rankmesh::Tensor& residual) override;
  Matrix output(const rankmesh::Tensor& hidden, const rankmesh::Tensor& residual) override;
  void finish() override;

private:
  struct Shard {
    rankmesh::Tensor w1, w2;
  };
  // What the work enqueued since the last retire() uses: it must stay allocated until that work
  // has run, because the backend's allocator reuses a dropped block at once (kernels are ours
  // to order, as with torch's allocator), possibly for another rank's stream.
  struct InFlight {
    std::shared_ptr<rankmesh::Event> done;  // recorded after the work
    std::vector<rankmesh::Tensor> tensors;  // device tensors and pinned staging
  };

  rankmesh::Tensor fresh(int rows, int cols);                     // device memory, held
  rankmesh::Tensor upload(const Matrix& host, int rows, int cols);  // copied on the stream, held
  // An activation a kernel will read: checked, held, and the kernels wait for its producer.
  const rankmesh::Tensor& use(const rankmesh::Tensor& t);
  // Orders the kernels launched from now on after `ready` (a tensor's ready event, or null).
  void order_after(const std::shared_ptr<rankmesh::Event>& ready);
  void retire();  // closes the current InFlight with an event; drops the ones that completed

  rankmesh::CudaBackend& backend_;
  const ModelShape m_;
  const int tp_;
  const std::chrono::milliseconds timeout_;
  std::shared_ptr<rankmesh::Stream> stream_;
  rankmesh::StreamGuard guard_;
  void* native_;  // stream_'s cudaStream_t, where the kernels go
  std::vector<Shard> shards_;
  std::size_t weight_bytes_ = 0;
  InFlight pending_;
  std::deque<InFlight> retired_;
};

}  // namespace pipeline
