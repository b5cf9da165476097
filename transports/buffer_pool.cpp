#include "buffer_pool.hpp"

#include <sys/mman.h>

#include <bit>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

constexpr std::size_t kAlignment = 64;

void* allocate_memory(std::size_t size) {
  if (size < BufferPool::kHugePage) {
    void* data = std::aligned_alloc(kAlignment, size);  // size: a power of two >= kAlignment
    if (data == nullptr) throw std::bad_alloc();
    return data;
  }
  // Transparent huge pages need 2 MiB-aligned ranges: map one page more and trim both ends.
  const std::size_t mapped = size + BufferPool::kHugePage;
  void* raw = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const auto start = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = (start + BufferPool::kHugePage - 1) & ~(BufferPool::kHugePage - 1);
  const std::size_t head = aligned - start;
  if (head != 0) munmap(raw, head);
  const std::size_t tail = mapped - head - size;
  if (tail != 0) munmap(reinterpret_cast<void*>(aligned + size), tail);
  void* data = reinterpret_cast<void*>(aligned);
  madvise(data, size, MADV_HUGEPAGE);  // a hint: without THP the block still works
  return data;
}

void free_memory(void* data, std::size_t size) noexcept {
  if (size < BufferPool::kHugePage)
    std::free(data);
  else
    munmap(data, size);
}

}  // namespace

struct BufferPool::State {
  // One block of memory, recycled with it. While a tensor holds the block, `owner` keeps the
  // pool alive; a cached block holds no reference (the pool owns it).
  struct Block {
    void* data;
    std::size_t size;
    std::shared_ptr<State> owner;
  };

  explicit State(BufferPoolOptions o) : options(o) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State();

  static void release(Block* block) noexcept;

  BufferPoolOptions options;
  std::mutex mutex;
  std::unordered_map<std::size_t, std::vector<Block*>> free;
  Stats stats;
};

BufferPool::State::~State() {
  for (auto& [size, blocks] : free) {
    for (Block* block : blocks) {
      free_memory(block->data, block->size);
      delete block;
    }
  }
}

void BufferPool::State::release(Block* block) noexcept {
  std::shared_ptr<State> owner = std::move(block->owner);
  bool keep = false;
  {
    std::lock_guard lock(owner->mutex);
    owner->stats.in_use_bytes -= block->size;
    if (owner->stats.cached_bytes + block->size <= owner->options.max_cached_bytes) {
      try {
        owner->free[block->size].push_back(block);
        owner->stats.cached_bytes += block->size;
        keep = true;
      } catch (const std::bad_alloc&) {
      }
    }
  }
  if (!keep) {
    free_memory(block->data, block->size);
    delete block;
  }
  // `owner` goes last: when it was the final reference, the pool frees its cache now.
}

BufferPool::BufferPool(BufferPoolOptions options)
    : state_(std::make_shared<State>(options)) {}

std::size_t BufferPool::block_size(std::size_t nbytes) {
  if (nbytes <= kAlignment) return kAlignment;
  if (nbytes > std::numeric_limits<std::size_t>::max() - kHugePage)
    throw Error(Errc::limit_exceeded, "a buffer of " + std::to_string(nbytes) +
                                          " bytes does not fit in memory");
  if (nbytes >= kHugePage) return (nbytes + kHugePage - 1) & ~(kHugePage - 1);
  return std::bit_ceil(nbytes);
}

Tensor BufferPool::allocate(const Shape& shape, DType dtype) const {
  const auto numel = static_cast<std::uint64_t>(shape.numel());
  const std::size_t element = dtype_size(dtype);
  if (numel > std::numeric_limits<std::size_t>::max() / element)
    throw Error(Errc::limit_exceeded, "a tensor of shape " + to_string(shape) + " and dtype " +
                                          to_string(dtype) + " does not fit in memory");
  const std::size_t nbytes = static_cast<std::size_t>(numel) * element;
  if (nbytes == 0) return Tensor::empty(shape, dtype);
  const std::size_t size = block_size(nbytes);

  State::Block* block = nullptr;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->free.find(size);
    if (it != state_->free.end() && !it->second.empty()) {
      block = it->second.back();
      it->second.pop_back();
      state_->stats.cached_bytes -= size;
      ++state_->stats.reused;
    } else {
      ++state_->stats.fresh;
    }
    state_->stats.in_use_bytes += size;
  }
  if (block == nullptr) {
    try {
      block = new State::Block{allocate_memory(size), size, nullptr};
    } catch (...) {
      std::lock_guard lock(state_->mutex);
      state_->stats.in_use_bytes -= size;
      throw;
    }
  }
  block->owner = state_;
  try {
    return Tensor::wrap(block->data, shape, dtype, Device{},
                        [block](void*) { State::release(block); });
  } catch (...) {
    State::release(block);
    throw;
  }
}

Allocator BufferPool::allocator() const {
  return [pool = *this](const Shape& shape, DType dtype) { return pool.allocate(shape, dtype); };
}

BufferPool::Stats BufferPool::stats() const {
  std::lock_guard lock(state_->mutex);
  return state_->stats;
}

void BufferPool::trim() const {
  std::unordered_map<std::size_t, std::vector<State::Block*>> blocks;
  {
    std::lock_guard lock(state_->mutex);
    blocks.swap(state_->free);
    state_->stats.cached_bytes = 0;
  }
  for (auto& [size, list] : blocks) {
    for (State::Block* block : list) {
      free_memory(block->data, size);
      delete block;
    }
  }
}

BufferPool shared_buffer_pool() {
  static BufferPool pool;
  return pool;
}

}  // namespace rankmesh
