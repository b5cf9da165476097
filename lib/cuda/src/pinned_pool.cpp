#include "pinned_pool.hpp"

#include <cuda_runtime_api.h>

#include <bit>

#include "cuda_check.hpp"

namespace rankmesh::cuda {

PinnedPool::PinnedPool(int device, std::size_t limit) : device_(device), limit_(limit) {}

PinnedPool::~PinnedPool() {
  for (const auto& [size, ptr] : free_) (void)cudaFreeHost(ptr);
}

std::size_t PinnedPool::block_size(std::size_t bytes) noexcept {
  return std::bit_ceil(std::max<std::size_t>(bytes, std::size_t{64} << 10));
}

void* PinnedPool::take(std::size_t bytes) {
  const std::size_t size = block_size(bytes);
  {
    std::lock_guard lock(mutex_);
    if (auto it = free_.find(size); it != free_.end()) {
      void* ptr = it->second;
      free_.erase(it);
      return ptr;
    }
    if (total_ + size > limit_) return nullptr;
    total_ += size;  // reserved now, so that two threads cannot both pass the limit
  }
  DeviceScope scope(device_);
  void* ptr = nullptr;
  const cudaError_t result = cudaHostAlloc(&ptr, size, cudaHostAllocPortable);
  if (result != cudaSuccess) {
    (void)cudaGetLastError();
    std::lock_guard lock(mutex_);
    total_ -= size;
    return nullptr;  // pageable memory still works, only slower
  }
  return ptr;
}

void PinnedPool::give_back(void* ptr, std::size_t bytes) noexcept {
  std::lock_guard lock(mutex_);
  free_.emplace(block_size(bytes), ptr);
}

std::size_t PinnedPool::pinned_bytes() const {
  std::lock_guard lock(mutex_);
  return total_;
}

}  // namespace rankmesh::cuda
