// PinnedPool: page-locked host memory for staging device bytes, kept for reuse (cudaMallocHost
// took 378 ms for 256 MiB on the GPU host: far too slow for a send path).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>

namespace rankmesh::cuda {

class PinnedPool {
public:
  PinnedPool(int device, std::size_t limit);
  ~PinnedPool();
  PinnedPool(const PinnedPool&) = delete;
  PinnedPool& operator=(const PinnedPool&) = delete;

  // At least `bytes` pinned bytes, or null when the pool's limit would be passed (the caller
  // then uses pageable memory). Blocks come in power-of-two sizes from 64 KiB, so that the few
  // sizes a step stages keep finding theirs.
  void* take(std::size_t bytes);
  void give_back(void* ptr, std::size_t bytes) noexcept;
  std::size_t pinned_bytes() const;

private:
  static std::size_t block_size(std::size_t bytes) noexcept;

  const int device_;
  const std::size_t limit_;
  mutable std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;
  std::size_t total_ = 0;  // pinned bytes held, lent or free
};

}  // namespace rankmesh::cuda
