#include "event_pool.hpp"

#include "cuda_check.hpp"

namespace rankmesh::cuda {

EventPool::~EventPool() {
  for (cudaEvent_t event : free_) (void)cudaEventDestroy(event);
}

std::shared_ptr<void> EventPool::take() {
  cudaEvent_t event = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (!free_.empty()) {
      event = free_.back();
      free_.pop_back();
    }
  }
  if (event == nullptr) {
    DeviceScope scope(device_);
    check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreateWithFlags",
          device_);
  }
  // A re-record of a pooled event is safe: waits issued earlier keep waiting for the record
  // they saw (cudaStreamWaitEvent binds to the most recent record at the time of the call).
  return std::shared_ptr<void>(event, [pool = shared_from_this()](void* e) {
    std::lock_guard lock(pool->mutex_);
    pool->free_.push_back(static_cast<cudaEvent_t>(e));
  });
}

}  // namespace rankmesh::cuda
