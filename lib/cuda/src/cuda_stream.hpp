// CudaStream: a rankmesh Stream that is a CUDA stream. Device work (copies, waits on other
// streams' events) is issued straight onto the CUDA stream; host-side work (Stream::enqueue,
// waits on host or user events, copies to pageable memory) runs on the stream's own thread, and
// the device work issued after it waits behind it. Events complete through cudaLaunchHostFunc,
// whose callback only hands the news to that thread: it calls no CUDA and runs no user code.
// Nothing here calls cudaStreamSynchronize or cudaDeviceSynchronize, except the destructor
// (tearing down waits for the work already issued).
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <memory>

#include "rankmesh/stream.hpp"
#include "rankmesh/tensor.hpp"

namespace rankmesh::cuda {

class EventPool;

class CudaStream final : public Stream {
public:
  // `owned`: the cudaStream_t is destroyed with this Stream (else the caller's, e.g. torch's).
  CudaStream(DeviceBackend& backend, int device, cudaStream_t stream, bool owned,
             std::shared_ptr<EventPool> events);
  ~CudaStream() override;

  cudaStream_t native() const noexcept;

  void enqueue(std::function<void()> work) override;
  void record(Event& event) override;
  void wait(const Event& event) override;
  bool query() const override;
  std::exception_ptr error() const override;
  bool capturing() const override;

  // Issues `op` (asynchronous CUDA calls on the stream, e.g. cudaMemcpyAsync between device and
  // pinned memory) in stream order: now, when nothing host-side is pending, else from the
  // stream's thread once it is. `a` and `b` (may be undefined) stay alive until the next event
  // recorded here completes. Skipped once the stream has failed.
  void issue(std::function<void(cudaStream_t)> op, Tensor a, Tensor b);

  struct State;  // shared with callbacks and the stream's thread, in cuda_stream.cpp

private:
  std::shared_ptr<State> state_;
};

}  // namespace rankmesh::cuda
