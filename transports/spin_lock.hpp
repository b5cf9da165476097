// SpinLock: a lock for critical sections of a few instructions taken on every message (the
// buffer pool's free lists). Uncontended it costs one atomic exchange and one store, where a
// mutex costs a library call each way. A waiter spins briefly, then yields its core, so that a
// holder preempted on an oversubscribed machine gets to run and let go.
#pragma once

#include <atomic>
#include <thread>

namespace rankmesh {

class SpinLock {
public:
  void lock() noexcept {
    while (locked_.exchange(true, std::memory_order_acquire)) wait();
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

private:
  void wait() const noexcept {
    for (int spins = 0; locked_.load(std::memory_order_relaxed); ++spins) {
      if (spins < kSpinsBeforeYield) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

  static constexpr int kSpinsBeforeYield = 64;
  std::atomic<bool> locked_{false};
};

}  // namespace rankmesh
