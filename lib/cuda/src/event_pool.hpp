// EventPool: CUDA events (timing disabled: the cheap kind) reused across records; each costs
// about 0.4 µs to create, a record per copy would otherwise create one per message.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <mutex>
#include <vector>

namespace rankmesh::cuda {

class EventPool : public std::enable_shared_from_this<EventPool> {
public:
  explicit EventPool(int device) : device_(device) {}
  ~EventPool();
  EventPool(const EventPool&) = delete;
  EventPool& operator=(const EventPool&) = delete;

  // A cudaEvent_t (as the pointer it is), back in the pool when the last holder drops it.
  // Throws Error(device) when none can be created.
  std::shared_ptr<void> take();

private:
  const int device_;
  std::mutex mutex_;
  std::vector<cudaEvent_t> free_;
};

}  // namespace rankmesh::cuda
