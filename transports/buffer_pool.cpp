#include "buffer_pool.hpp"

#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "rankmesh/error.hpp"
#include "spin_lock.hpp"

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

// Aligned to a pair of lines, so that its control block's counts and its lock share no line
// with another object: two ranks' pools made one after the other sat on one line, and each
// rank's allocations took it from the other's core (8 B p2p inproc ~10% slower in slow
// minutes, alternating runs).
struct alignas(128) BufferPool::State {
  // One block of memory, recycled with its bookkeeping: handing it out as a tensor allocates
  // nothing. While a tensor holds the block, `owner` keeps the pool alive; a cached block holds
  // no reference (the pool owns it) and waits in its size's free list.
  struct Block final : TensorMemory {
    Block(void* data, std::size_t bytes) : TensorMemory(data, &State::release), size(bytes) {}
    std::size_t size;
    std::shared_ptr<State> owner;
    std::uint64_t cached_in = 0;  // the trimmer's round when the block last entered the cache
    Block* next_free = nullptr;
  };
  // Cached blocks of one size, most recently cached first (the warmest is reused first).
  struct FreeList {
    Block* head = nullptr;
    void push(Block* block) noexcept {
      block->next_free = head;
      head = block;
    }
    Block* pop() noexcept {
      Block* block = head;
      if (block != nullptr) head = block->next_free;
      return block;
    }
    // Unlinks the blocks `take` picks and hands each to `out`.
    template <class Pick, class Out>
    void remove_if(Pick take, Out out) {
      for (Block** link = &head; *link != nullptr;) {
        Block* block = *link;
        if (take(block)) {
          out(block);  // first: should it throw, the block stays listed
          *link = block->next_free;
        } else {
          link = &block->next_free;
        }
      }
    }
  };
  // Heap blocks are powers of two from kAlignment up to below kHugePage: one list each, found
  // by index (a message's allocations must not search); huge blocks are rare and big.
  static constexpr std::size_t kHeapSizes =
      static_cast<std::size_t>(std::countr_zero(kHugePage) - std::countr_zero(kAlignment));

  explicit State(BufferPoolOptions o) : options(o) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State();

  static std::size_t heap_index(std::size_t size) noexcept {
    return static_cast<std::size_t>(std::countr_zero(size) - std::countr_zero(kAlignment));
  }
  // The list a block of `size` is cached in (a huge size's first one is made: may throw).
  FreeList& free_list(std::size_t size) {
    return size < kHugePage ? heap_free[heap_index(size)] : huge_free[size];
  }
  // A cached block of `size`, or null.
  Block* take_cached(std::size_t size) noexcept {
    if (size < kHugePage) return heap_free[heap_index(size)].pop();
    const auto it = huge_free.find(size);
    return it == huge_free.end() ? nullptr : it->second.pop();
  }
  template <class Visit>
  void for_each_free_list(Visit visit) {
    for (FreeList& list : heap_free) visit(list);
    for (auto& [size, list] : huge_free) visit(list);
  }

  static void release(TensorMemory* memory) noexcept;
  // Starts the trimmer that the caller claimed (set trimmer_forks under `mutex`); called
  // without `mutex` held.
  static void start_trimmer(const std::shared_ptr<State>& state) noexcept;
  // The trimmer's loop: every idle_release, gives back the blocks cached before its previous
  // round; ends once the cache is empty. It holds the state, so the pool outlives it.
  static void trim_idle(std::shared_ptr<State> state) noexcept;
  // Frees `blocks` (out of the cache already) and gives freed heap memory back to the system.
  static void free_blocks(std::vector<Block*>& blocks) noexcept;
  static void give_back_heap() noexcept;

  BufferPoolOptions options;
  SpinLock mutex;  // held for a few instructions per allocation and release
  std::array<FreeList, kHeapSizes> heap_free;
  std::map<std::size_t, FreeList> huge_free;
  Stats stats;
  std::uint64_t round = 0;  // the trimmer's rounds so far
  // The fork count when this process's trimmer started; none runs unless it equals g_forks.
  std::optional<std::uint64_t> trimmer_forks;
};

BufferPool::State::~State() {
  for_each_free_list([](FreeList& list) {
    while (Block* block = list.pop()) {
      free_memory(block->data(), block->size);
      delete block;
    }
  });
}

void BufferPool::State::release(TensorMemory* memory) noexcept {
  auto* block = static_cast<Block*>(memory);
  std::shared_ptr<State> owner = std::move(block->owner);
  bool keep = false;
  bool start_trimmer = false;
  {
    std::lock_guard lock(owner->mutex);
    owner->stats.in_use_bytes -= block->size;
    if (owner->stats.cached_bytes + block->size <= owner->options.max_cached_bytes) {
      try {
        owner->free_list(block->size).push(block);  // a huge size's first list may allocate
        owner->stats.cached_bytes += block->size;
        block->cached_in = owner->round;
        keep = true;
      } catch (const std::bad_alloc&) {
      }
    }
    // Claimed here, started once the lock is let go: making a thread takes far longer than
    // the few instructions others may wait on this lock for.
    const std::uint64_t forks = g_forks.load(std::memory_order_relaxed);
    start_trimmer = keep && owner->options.idle_release > std::chrono::milliseconds::zero() &&
                    owner->trimmer_forks != forks;
    if (start_trimmer) owner->trimmer_forks = forks;
  }
  if (start_trimmer) State::start_trimmer(owner);
  if (!keep) {
    free_memory(block->data(), block->size);
    delete block;
  }
  // `owner` goes last: when it was the final reference, the pool frees its cache now.
}

void BufferPool::State::start_trimmer(const std::shared_ptr<State>& state) noexcept {
  try {
    count_forks();
    std::thread(trim_idle, state).detach();
  } catch (...) {  // no thread to be had (system_error, bad_alloc): a later release tries again
    std::lock_guard lock(state->mutex);
    state->trimmer_forks.reset();
  }
}

void BufferPool::State::trim_idle(std::shared_ptr<State> state) noexcept {
  // The release that started this thread may run on a thread bound to one core (a rank's, as
  // rankmesh bench binds them); the trimmer runs where the process may, as its main thread.
  cpu_set_t process_cores;
  if (sched_getaffinity(getpid(), sizeof process_cores, &process_cores) == 0)
    pthread_setaffinity_np(pthread_self(), sizeof process_cores, &process_cores);
  pthread_setname_np(pthread_self(), "rankmesh-trim");
  while (true) {
    std::this_thread::sleep_for(state->options.idle_release);
    std::vector<Block*> idle;
    bool done = false;
    try {
      std::lock_guard lock(state->mutex);
      // The last reference: nobody can allocate from the pool any more.
      const bool orphaned = state.use_count() == 1;
      state->for_each_free_list([&](FreeList& list) {
        list.remove_if(
            [&](Block* block) { return orphaned || block->cached_in < state->round; },
            [&](Block* block) {
              idle.push_back(block);  // may throw bad_alloc: the block stays unlinked, listed
              state->stats.cached_bytes -= block->size;
              ++state->stats.released;
            });
      });
      ++state->round;
      done = state->stats.cached_bytes == 0;
      if (done) state->trimmer_forks.reset();
    } catch (const std::bad_alloc&) {  // no room to list idle blocks: try again next round
    }
    free_blocks(idle);
    if (done) return;
  }
}

void BufferPool::State::free_blocks(std::vector<Block*>& blocks) noexcept {
  bool heap = false;
  for (Block* block : blocks) {
    heap = heap || block->size < kHugePage;
    free_memory(block->data(), block->size);
    delete block;
  }
  if (heap) give_back_heap();
}

// free() keeps small blocks in the heap: its idle pages go back to the system. One trim at a
// time: pools trim on threads of their own (one per embedded rank), and under AddressSanitizer,
// whose allocator leaves glibc's heap unused and uninitialized, two first malloc_trim calls at
// once raced in glibc's initialization and one read a null arena (bench_smoke, sanitizer build);
// there the trim has nothing to give back and is skipped.
void BufferPool::State::give_back_heap() noexcept {
#if !defined(__SANITIZE_ADDRESS__)
  static std::mutex one_at_a_time;
  std::lock_guard lock(one_at_a_time);
  malloc_trim(0);
#endif
}

BufferPool::BufferPool(BufferPoolOptions options)
    : state_(std::make_shared<State>(options)) {}

BufferPool::BufferPool(BufferPoolOptions options, std::size_t own_up_to, BufferPool larger)
    : state_(std::make_shared<State>(options)), own_up_to_(own_up_to),
      larger_(std::move(larger.state_)) {}

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
  // The pool this block is kept in.
  const std::shared_ptr<State>& owner = nbytes > own_up_to_ && larger_ ? larger_ : state_;

  State::Block* block = nullptr;
  {
    std::lock_guard lock(owner->mutex);
    block = owner->take_cached(size);
    if (block != nullptr) {
      owner->stats.cached_bytes -= size;
      ++owner->stats.reused;
    } else {
      ++owner->stats.fresh;
    }
    owner->stats.in_use_bytes += size;
  }
  if (block == nullptr) {
    void* data = nullptr;
    try {
      data = allocate_memory(size);
      block = new State::Block(data, size);
    } catch (...) {
      if (data != nullptr) free_memory(data, size);
      std::lock_guard lock(owner->mutex);
      owner->stats.in_use_bytes -= size;
      throw;
    }
  }
  block->owner = owner;
  return Tensor::adopt(*block, shape, dtype, Device{});
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
    // Room for every cached block first: taking blocks off their lists cannot fail halfway.
    std::size_t cached = 0;
    state_->for_each_free_list([&](State::FreeList& list) {
      for (State::Block* block = list.head; block != nullptr; block = block->next_free) ++cached;
    });
    blocks.reserve(cached);
    state_->for_each_free_list([&](State::FreeList& list) {
      while (State::Block* block = list.pop()) {
        blocks.push_back(block);
        state_->stats.cached_bytes -= block->size;
      }
    });
  }
  State::free_blocks(blocks);
}

BufferPool shared_buffer_pool() {
  static BufferPool pool;
  return pool;
}

}  // namespace rankmesh
