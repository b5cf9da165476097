// DeviceAllocator: device memory for tensors, cached so that steady-state steps do not call
// cudaMalloc (it synchronizes the device and costs tens of microseconds), or an engine's own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "rankmesh/cuda_backend.hpp"

namespace rankmesh::cuda {

class DeviceAllocator {
public:
  DeviceAllocator(int device, CudaMemoryHooks hooks, std::size_t cache_limit);
  ~DeviceAllocator();  // frees the cache; blocks still lent out are freed by their release()
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // At least `bytes` (> 0) bytes of device memory. Throws Error(device) when even an empty cache
  // leaves too little. `stream`: the cudaStream_t (as void*) of the first use, for hooks.
  void* allocate(std::size_t bytes, void* stream);
  // Gives back what allocate(bytes) returned. The block is reused at once: its last users are
  // the copies that held its tensor, all finished (the backend's streams keep tensors alive
  // until their copies have run); kernels of an engine must be ordered by the engine, as with
  // torch's allocator (record_stream).
  void release(void* ptr, std::size_t bytes, void* stream) noexcept;
  void empty_cache();

  CudaBackend::MemoryStats stats() const;

private:
  // Blocks are kept by rounded size: 512 B steps up to 1 MiB, 2 MiB steps above, so that a
  // dict's tensors of varying batch sizes still find their blocks again.
  static std::size_t rounded(std::size_t bytes) noexcept;
  void free_cached_locked() noexcept;

  const int device_;
  const CudaMemoryHooks hooks_;
  const std::size_t cache_limit_;
  mutable std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;  // rounded size -> block
  std::size_t cached_ = 0;
  std::size_t in_use_ = 0;
  std::uint64_t mallocs_ = 0;
  std::uint64_t frees_ = 0;
};

}  // namespace rankmesh::cuda
