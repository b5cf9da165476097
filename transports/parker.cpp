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
std::atomic<int> g_spinners{0};

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

bool acquire_spinner() noexcept {
  if (g_spinners.fetch_add(1, std::memory_order_acq_rel) < max_spinners()) return true;
  g_spinners.fetch_sub(1, std::memory_order_acq_rel);
  return false;
}

void release_spinner() noexcept { g_spinners.fetch_sub(1, std::memory_order_acq_rel); }

void yield_core() noexcept { sched_yield(); }

}  // namespace detail

void Parker::notify() noexcept {
  epoch_.fetch_add(1, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) != 0) {
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&epoch_), FUTEX_WAKE_PRIVATE, INT32_MAX,
            nullptr, nullptr, 0);
  }
}

bool Parker::park(std::uint32_t seen, Deadline deadline) noexcept {
  auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return false;
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
  timespec timeout{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  // The futex word is the epoch: a notify() between our read of it and this call changes it,
  // so the kernel returns at once instead of sleeping through the wake-up.
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&epoch_), FUTEX_WAIT_PRIVATE, seen, &timeout,
          nullptr, 0);
  return Clock::now() < deadline;
}

}  // namespace rankmesh
