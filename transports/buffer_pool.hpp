// Host buffers for received tensors, recycled instead of freshly faulted in. A copy into fresh
// 4 KiB pages runs at a fraction of the speed of one into warm memory, so receives take their
// memory from here: large blocks are backed by transparent huge pages, and every block returns
// to the pool when the last Tensor sharing it goes away.
//
// Bounded: the cache holds at most max_cached_bytes (1 GiB by default; a block that would exceed
// it is freed at once), and a block left unused in the cache for idle_release (2 s by default) to
// twice that goes back to the system, so a process that stops receiving gives its burst's
// memory back. A trimmer thread ("rankmesh-trim", on the cores the process's main thread may
// use, whichever thread started it) runs while the cache holds blocks and ends when it is empty.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "rankmesh/tensor.hpp"

namespace rankmesh {

struct BufferPoolOptions {
  // Blocks kept for reuse beyond this total are given back to the system instead.
  std::size_t max_cached_bytes = std::size_t{1} << 30;
  // Cached blocks unused from this long to twice this long are given back to the system;
  // zero: kept until trim().
  std::chrono::milliseconds idle_release{2000};
};

// A handle to a pool (copies share it). Thread-safe. The pool's memory lives as long as the
// last handle or the last tensor it handed out, whichever goes last.
class BufferPool {
public:
  // Blocks of at least this size are mmap'ed, 2 MiB-aligned, with MADV_HUGEPAGE, and sized in
  // multiples of it; smaller ones are 64-byte aligned heap blocks sized in powers of two.
  static constexpr std::size_t kHugePage = std::size_t{2} << 20;

  explicit BufferPool(BufferPoolOptions options = {});
  // A pool that keeps blocks of up to `own_up_to` bytes itself and takes larger ones from
  // `larger`'s own blocks (whose bound covers them; a larger pool of `larger` is not asked):
  // a thread's small blocks in a pool of its own, whose lock no other thread's allocations
  // take, while large ones stay shared.
  BufferPool(BufferPoolOptions options, std::size_t own_up_to, BufferPool larger);

  // A host tensor of `shape` x `dtype`; its bytes are unspecified (a recycled block keeps what
  // it last held). Throws Error(limit_exceeded) when the size overflows, std::bad_alloc when
  // memory runs out.
  Tensor allocate(const Shape& shape, DType dtype) const;
  // An Allocator drawing from this pool (it shares the pool).
  Allocator allocator() const;

  struct Stats {
    std::size_t cached_bytes = 0;  // in blocks waiting for reuse
    std::size_t in_use_bytes = 0;  // in blocks held by tensors
    std::uint64_t reused = 0;      // allocations served by a recycled block
    std::uint64_t fresh = 0;       // allocations that needed new memory
    std::uint64_t released = 0;    // cached blocks given back to the system for being idle
  };
  // This pool's own blocks (not those a larger pool lent it).
  Stats stats() const;
  // Gives every block cached in this pool (not a larger one's) back to the system.
  void trim() const;

  // The size of the block a request of `nbytes` gets.
  static std::size_t block_size(std::size_t nbytes);

private:
  struct State;
  std::shared_ptr<State> state_;
  std::size_t own_up_to_ = ~std::size_t{0};
  std::shared_ptr<State> larger_;  // null: every block is this pool's
};

// The process-wide pool that shm receives draw from unless told otherwise.
BufferPool shared_buffer_pool();

}  // namespace rankmesh
