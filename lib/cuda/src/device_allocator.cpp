#include "device_allocator.hpp"

#include <cuda_runtime_api.h>

#include "cuda_check.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh::cuda {

DeviceAllocator::DeviceAllocator(int device, CudaMemoryHooks hooks, std::size_t cache_limit)
    : device_(device), hooks_(std::move(hooks)), cache_limit_(cache_limit) {
  if (static_cast<bool>(hooks_.allocate) != static_cast<bool>(hooks_.release))
    throw Error(Errc::invalid_argument,
                "CudaMemoryHooks: give both allocate and release, or neither");
}

DeviceAllocator::~DeviceAllocator() { empty_cache(); }

std::size_t DeviceAllocator::rounded(std::size_t bytes) noexcept {
  constexpr std::size_t kSmallStep = 512;
  constexpr std::size_t kLargeStep = std::size_t{2} << 20;
  const std::size_t step = bytes <= (std::size_t{1} << 20) ? kSmallStep : kLargeStep;
  return (bytes + step - 1) / step * step;
}

void* DeviceAllocator::allocate(std::size_t bytes, void* stream) {
  if (hooks_.allocate) {
    void* ptr = hooks_.allocate(bytes, stream);
    if (ptr == nullptr)
      throw Error(Errc::device, "the engine's allocator gave no memory for " +
                                    std::to_string(bytes) + " bytes on cuda:" + std::to_string(device_));
    std::lock_guard lock(mutex_);
    in_use_ += bytes;
    return ptr;
  }
  const std::size_t size = rounded(bytes);
  {
    std::lock_guard lock(mutex_);
    if (auto it = free_.find(size); it != free_.end()) {
      void* ptr = it->second;
      free_.erase(it);
      cached_ -= size;
      in_use_ += size;
      return ptr;
    }
  }
  DeviceScope scope(device_);
  void* ptr = nullptr;
  cudaError_t result = cudaMalloc(&ptr, size);
  if (result == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    empty_cache();  // the cache's blocks may be what is missing
    result = cudaMalloc(&ptr, size);
  }
  check(result, ("cudaMalloc of " + std::to_string(size) + " bytes").c_str(), device_);
  std::lock_guard lock(mutex_);
  ++mallocs_;
  in_use_ += size;
  return ptr;
}

void DeviceAllocator::release(void* ptr, std::size_t bytes, void* stream) noexcept {
  if (hooks_.release) {
    hooks_.release(ptr, bytes, stream);
    std::lock_guard lock(mutex_);
    in_use_ -= bytes;
    return;
  }
  const std::size_t size = rounded(bytes);
  std::lock_guard lock(mutex_);
  in_use_ -= size;
  if (cached_ + size > cache_limit_) {
    DeviceScope scope(device_);
    (void)cudaFree(ptr);  // a failure here means a dead context: nothing left to give back
    ++frees_;
    return;
  }
  free_.emplace(size, ptr);
  cached_ += size;
}

void DeviceAllocator::empty_cache() {
  std::lock_guard lock(mutex_);
  free_cached_locked();
}

void DeviceAllocator::free_cached_locked() noexcept {
  if (free_.empty()) return;
  int previous = -1;
  (void)cudaGetDevice(&previous);
  (void)cudaSetDevice(device_);
  for (const auto& [size, ptr] : free_) {
    (void)cudaFree(ptr);
    ++frees_;
  }
  if (previous >= 0 && previous != device_) (void)cudaSetDevice(previous);
  free_.clear();
  cached_ = 0;
}

CudaBackend::MemoryStats DeviceAllocator::stats() const {
  std::lock_guard lock(mutex_);
  CudaBackend::MemoryStats stats;
  stats.device_mallocs = mallocs_;
  stats.device_frees = frees_;
  stats.device_in_use = in_use_;
  stats.device_cached = cached_;
  return stats;
}

}  // namespace rankmesh::cuda
