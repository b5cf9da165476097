// Waiting that spins briefly, then parks on a futex. Waking a parked thread on the other core
// costs ~20 us on the machines rankmesh targets, so a waiter spins first — but only while fewer
// spinners than cores are active, since a spinner that steals the core its peer needs is worse
// than parking.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "deadline.hpp"

namespace rankmesh {

struct SpinPolicy {
  std::chrono::nanoseconds spin_for{std::chrono::microseconds(50)};
  int max_spinners = 0;  // 0: one per core
};

// Process-wide; set before ranks start waiting.
void set_spin_policy(const SpinPolicy& policy);

class Parker {
public:
  // Wakes every waiter whose condition may have changed. Call after publishing the change.
  void notify() noexcept;

  // Waits until `ready()` is true (returns true) or the deadline passes (returns false).
  template <class Ready>
  bool wait_until(Ready&& ready, Deadline deadline) {
    if (ready()) return true;
    if (spin(ready, deadline)) return true;
    while (true) {
      std::uint32_t seen = epoch_.load(std::memory_order_seq_cst);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      if (ready()) {
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        return true;
      }
      bool timed_out = !park(seen, deadline);
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
      if (ready()) return true;
      if (timed_out) return false;
    }
  }

private:
  template <class Ready>
  bool spin(Ready& ready, Deadline deadline);
  bool acquire_spinner() noexcept;
  void release_spinner() noexcept;
  // futex wait while epoch_ == seen; false once the deadline has passed.
  bool park(std::uint32_t seen, Deadline deadline) noexcept;
  static std::chrono::nanoseconds spin_budget() noexcept;

  std::atomic<std::uint32_t> epoch_{0};
  std::atomic<std::uint32_t> sleepers_{0};
};

template <class Ready>
bool Parker::spin(Ready& ready, Deadline deadline) {
  if (!acquire_spinner()) return false;
  Deadline stop = Clock::now() + spin_budget();
  if (deadline < stop) stop = deadline;
  bool done = false;
  for (unsigned i = 0; !done; ++i) {
    done = ready();
    if (!done && (i & 63) == 63 && Clock::now() >= stop) break;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  release_spinner();
  return done;
}

}  // namespace rankmesh
