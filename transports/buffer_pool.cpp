#include "buffer_pool.hpp"

#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>

#include <atomic>
#include <bit>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
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

// Counts forks: a child inherits a pool whose trimmer thread it does not have, and must start
// its own.
std::atomic<std::uint64_t> g_forks{0};

void count_forks() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1); }); });
}

}  // namespace

struct BufferPool::State {
  // One block of memory, recycled with it. While a tensor holds the block, `owner` keeps the
  // pool alive; a cached block holds no reference (the pool owns it).
  struct Block {
    void* data;
    std::size_t size;
    std::shared_ptr<State> owner;
    std::uint64_t cached_in = 0;  // the trimmer's round when the block last entered the cache
  };

  explicit State(BufferPoolOptions o) : options(o) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State();

  static void release(Block* block) noexcept;
  // Starts the trimmer (none runs in this process); called with `mutex` held.
  static void ensure_trimmer(const std::shared_ptr<State>& state) noexcept;
  // The trimmer's loop: every idle_release, gives back the blocks cached before its previous
  // round; ends once the cache is empty. It holds the state, so the pool outlives it.
  static void trim_idle(std::shared_ptr<State> state) noexcept;
  // Frees `blocks` (out of the cache already) and gives freed heap memory back to the system.
  static void free_blocks(std::vector<Block*>& blocks) noexcept;

  BufferPoolOptions options;
  std::mutex mutex;
  std::unordered_map<std::size_t, std::vector<Block*>> free;
  Stats stats;
  std::uint64_t round = 0;  // the trimmer's rounds so far
  // The fork count when this process's trimmer started; none runs unless it equals g_forks.
  std::optional<std::uint64_t> trimmer_forks;
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
        block->cached_in = owner->round;
        keep = true;
      } catch (const std::bad_alloc&) {
      }
    }
    if (keep && owner->trimmer_forks != g_forks.load(std::memory_order_relaxed))
      ensure_trimmer(owner);
  }
  if (!keep) {
    free_memory(block->data, block->size);
    delete block;
  }
  // `owner` goes last: when it was the final reference, the pool frees its cache now.
}

void BufferPool::State::ensure_trimmer(const std::shared_ptr<State>& state) noexcept {
  const std::uint64_t forks = g_forks.load(std::memory_order_relaxed);
  if (state->options.idle_release <= std::chrono::milliseconds::zero()) return;
  try {
    count_forks();
    std::thread(trim_idle, state).detach();
    state->trimmer_forks = forks;
  } catch (...) {  // no thread to be had (system_error, bad_alloc): the cache waits for trim()
  }
}

void BufferPool::State::trim_idle(std::shared_ptr<State> state) noexcept {
  while (true) {
    std::this_thread::sleep_for(state->options.idle_release);
    std::vector<Block*> idle;
    bool done = false;
    {
      std::lock_guard lock(state->mutex);
      // The last reference: nobody can allocate from the pool any more.
      const bool orphaned = state.use_count() == 1;
      for (auto& [size, blocks] : state->free) {
        std::erase_if(blocks, [&](Block* block) {
          if (!orphaned && block->cached_in >= state->round) return false;  // since last round
          idle.push_back(block);
          state->stats.cached_bytes -= block->size;
          ++state->stats.released;
          return true;
        });
      }
      ++state->round;
      done = state->stats.cached_bytes == 0;
      if (done) state->trimmer_forks.reset();
    }
    free_blocks(idle);
    if (done) return;
  }
}

void BufferPool::State::free_blocks(std::vector<Block*>& blocks) noexcept {
  bool heap = false;
  for (Block* block : blocks) {
    heap = heap || block->size < kHugePage;
    free_memory(block->data, block->size);
    delete block;
  }
  if (heap) malloc_trim(0);  // free() keeps small blocks in the heap; hand its idle pages back
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
  std::vector<State::Block*> blocks;
  {
    std::lock_guard lock(state_->mutex);
    for (auto& [size, list] : state_->free) blocks.insert(blocks.end(), list.begin(), list.end());
    state_->free.clear();
    state_->stats.cached_bytes = 0;
  }
  State::free_blocks(blocks);
}

BufferPool shared_buffer_pool() {
  static BufferPool pool;
  return pool;
}

}  // namespace rankmesh
