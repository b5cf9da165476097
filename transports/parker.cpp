#include "parker.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <thread>

namespace rankmesh {
namespace {

std::atomic<std::int64_t> g_spin_ns{std::chrono::nanoseconds(SpinPolicy{}.spin_for).count()};
std::atomic<int> g_max_spinners{0};
std::atomic<bool> g_sockets_spin{true};

// The spinner slots, one per cache line: a waiter holds one while it spins. A single counter
// of spinners was read-modify-written by every wait of every thread, so ranks of one process
// took the line from each other on every message, and a receiver paid that cache miss between
// seeing its frame and reading it. A thread comes back to the slot it held last, so in steady
// state each touches its own line. A slot takes two lines: x86's adjacent-line prefetcher
// fetches lines in 128-byte pairs, so neighbours on one pair would still pull each other's slot.
constexpr int kSpinnerSlots = 256;
struct alignas(128) SpinnerSlot {
  std::atomic<bool> taken{false};
};
SpinnerSlot g_spinner_slots[kSpinnerSlots];
// The slot this thread held last, where it looks first (constant-initialized: no TLS wrapper
// call on the wait path; a new thread probes from slot 0 and keeps the first free one).
thread_local int t_spinner_slot = 0;

int max_spinners() noexcept {
  int configured = g_max_spinners.load(std::memory_order_relaxed);
  if (configured > 0) return configured;
  // hardware_concurrency() reads /sys on every call: ask once.
  static const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  return cores;
}

}  // namespace

void set_spin_policy(const SpinPolicy& policy) {
  g_spin_ns.store(policy.spin_for.count(), std::memory_order_relaxed);
  g_max_spinners.store(policy.max_spinners, std::memory_order_relaxed);
  g_sockets_spin.store(policy.sockets_spin, std::memory_order_relaxed);
}

std::chrono::nanoseconds spin_budget() noexcept {
  return std::chrono::nanoseconds(g_spin_ns.load(std::memory_order_relaxed));
}

std::chrono::nanoseconds socket_spin_budget() noexcept {
  return g_sockets_spin.load(std::memory_order_relaxed) ? spin_budget()
                                                        : std::chrono::nanoseconds::zero();
}

namespace detail {

int acquire_spinner() noexcept {
  const int slots = std::min(max_spinners(), kSpinnerSlots);
  const int first = t_spinner_slot % slots;
  for (int k = 0; k < slots; ++k) {
    const int i = (first + k) % slots;
    std::atomic<bool>& taken = g_spinner_slots[i].taken;
    if (!taken.load(std::memory_order_relaxed) &&
        !taken.exchange(true, std::memory_order_acquire)) {
      t_spinner_slot = i;
      return i;
    }
  }
  return -1;
}

void release_spinner(int slot) noexcept {
  g_spinner_slots[slot].taken.store(false, std::memory_order_release);
}

void yield_core() noexcept { sched_yield(); }

}  // namespace detail

void Parker::notify() noexcept {
  notify_sleepers(epoch_, sleepers_, [this] {
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&epoch_), FUTEX_WAKE_PRIVATE, INT32_MAX,
            nullptr, nullptr, 0);
  });
}

void Parker::park(std::uint32_t seen, Deadline deadline) noexcept {
  auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return;
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
  timespec timeout{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  // The futex word is the epoch: a notify() between our read of it and this call changes it,
  // so the kernel returns at once instead of sleeping through the wake-up.
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&epoch_), FUTEX_WAIT_PRIVATE, seen, &timeout,
          nullptr, 0);
}

}  // namespace rankmesh
