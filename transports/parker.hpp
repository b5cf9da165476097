// Waiting that spins briefly, then parks on a futex. Waking a parked thread on the other core
// costs ~20 us on the machines rankmesh targets, so a waiter spins first — but only while a
// spinner slot of its process is free (SpinPolicy: a share of the node's cores, or one slot
// where processes outnumber cores), and it offers its core to a peer that runs there, since a
// spinner that steals the core its peer needs is worse than parking. Every transport's waits
// (inproc, shm, tcp receives) spin through spin_until() below, so one process-wide policy and
// one set of spinner slots govern them all.
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "deadline.hpp"

namespace rankmesh {

struct SpinPolicy {
  std::chrono::nanoseconds spin_for{std::chrono::microseconds(50)};
  int max_spinners = 0;  // 0: one per core; at most 256
  // Whether waits that poll a socket (tcp: a system call per poll) spin too. Not where
  // processes outnumber cores: their spinners' system calls take the time their peers need
  // (8 pairs over tcp, 16 processes on 2 cores: 155-186 -> 706 us a round trip when they spun).
  bool sockets_spin = true;

  // The policy for a process among `processes_on_node` on a node of `cores` cores (a world
  // started by a launcher has LOCAL_WORLD_SIZE of them): the cores are shared out, at most one
  // spinner per core on the node — and, where there are more processes than cores, one per
  // process, polling memory only. A spinner there offers its core to a peer that last ran on it
  // (spin_until), so it does not hold the core that peer needs; parking at once instead, as
  // before, made every message a futex wake-up, which costs more in a paravirtualized guest: 8
  // pairs over shm (16 processes on 2 cores) 120-124 -> 66-68 us a round trip and its CPU 37-40
  // -> 21-24 us, 2 pairs 19-20 -> 15-16.5 us (back to back, two runs each).
  static SpinPolicy for_node(std::chrono::nanoseconds spin, int processes_on_node, int cores) {
    const int share = std::max(1, cores) / std::max(1, processes_on_node);
    return SpinPolicy{spin, std::max(1, share), share > 0};
  }
};

// Process-wide; set before ranks start waiting.
void set_spin_policy(const SpinPolicy& policy);
// How long a wait spins under the policy.
std::chrono::nanoseconds spin_budget() noexcept;
// How long a wait that polls a socket spins: spin_budget(), or nothing where sockets do not spin.
std::chrono::nanoseconds socket_spin_budget() noexcept;

namespace detail {
// A spinner slot held while a wait spins: its index, -1 when every slot is taken.
int acquire_spinner() noexcept;
void release_spinner(int slot) noexcept;
void yield_core() noexcept;
}  // namespace detail

// Polls `ready` for up to `budget` (never past the deadline) if a spinner slot is free; true
// once it holds. Every 64 polls (~1.3 us where a pause takes ~20 ns) the spinner offers its core
// to the scheduler where `offer()` says so: where the peer it waits for shares this core (two
// ranks on one vCPU, common on a loaded 2-core machine), the peer runs at once instead of after
// the whole spin. Measured with both ranks of `rankmesh bench` p2p over shm on one core: a round
// trip of ~52 us when the core was offered every 1,024 polls (the spin ran out first), ~15 us
// every 64. But an offer also hands the core to any other process that waits for it: ranks on
// cores of their own among others' compile jobs took 4.5 us for 8 B offering every 64 polls,
// 2.8 us every 1,024. Waits that know where their peer runs offer only when it runs here.
template <class Ready, class Offer>
bool spin_until(Ready& ready, Deadline deadline, std::chrono::nanoseconds budget, Offer&& offer) {
  if (budget <= std::chrono::nanoseconds::zero()) return false;
  const int slot = detail::acquire_spinner();
  if (slot < 0) return false;
  Deadline stop = Clock::now() + budget;
  if (deadline < stop) stop = deadline;
  bool done = false;
  for (unsigned i = 1; !done; ++i) {
    done = ready();
    if (done) break;
    if ((i & 63) == 0) {
      if (Clock::now() >= stop) break;
      if (offer()) detail::yield_core();
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  detail::release_spinner(slot);
  return done;
}

// Notes in `word` (an atomic of std::uint32_t, or an atomic_ref to one) where this thread runs
// now and returns it: CPU + 1, so that 0 stays "not known yet". sched_getcpu() is a vDSO call:
// a few ns.
template <class Word>
std::uint32_t note_cpu(Word&& word) noexcept {
  const auto cpu = static_cast<std::uint32_t>(sched_getcpu() + 1);
  word.store(cpu, std::memory_order_relaxed);
  return cpu;
}

// spin_until's offer for a wait whose peer notes where it runs in `peer` (note_cpu) as this side
// does in `mine`: true where the peer last ran on this core, or is not known yet.
template <class Mine, class Peer>
bool peer_runs_here(Mine&& mine, Peer&& peer) noexcept {
  const std::uint32_t there = peer.load(std::memory_order_relaxed);
  return there == 0 || there == note_cpu(mine);
}

// For waits that cannot tell where their peer runs: the core is offered every 64 polls.
template <class Ready>
bool spin_until(Ready& ready, Deadline deadline, std::chrono::nanoseconds budget) {
  return spin_until(ready, deadline, budget, [] { return true; });
}

// The wake-up protocol of every wait that parks — Parker's words in one process, the futex words
// in shared memory across processes (shm_segment.hpp) — so that both are one protocol:
// - a waiter reads `epoch`, counts itself in `sleepers`, fences, checks its condition once more
//   and sleeps on `epoch` while it still holds what it read (park_until);
// - a notifier, after publishing, fences and reads `sleepers`; only where somebody may sleep
//   does it bump `epoch` (after that waiter read it, so its sleep returns) and wake it
//   (notify_sleepers). Without a sleeper a notify writes nothing: the line holding the words
//   stays in both sides' caches (a locked add per message took it from the waiter's core).
// Either the notifier's read sees the sleeper, or the waiter's check sees what was published.
// `Epoch` and `Sleepers` are std::atomic<std::uint32_t>& or std::atomic_ref<std::uint32_t>.
template <class Epoch, class Sleepers, class Wake>
void notify_sleepers(Epoch&& epoch, Sleepers&& sleepers, Wake&& wake) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sleepers.load(std::memory_order_seq_cst) != 0) {
    epoch.fetch_add(1, std::memory_order_seq_cst);
    wake();
  }
}

// Parks until `ready()` (true) or the deadline (false). `sleep(seen, deadline)` sleeps while
// the epoch still reads `seen`, until a wake-up or the deadline (it may return earlier);
// `check()` runs before every sleep and may throw (a peer found gone).
template <class Ready, class Epoch, class Sleepers, class Sleep, class Check>
bool park_until(Ready& ready, Epoch&& epoch, Sleepers&& sleepers, Deadline deadline, Sleep&& sleep,
                Check&& check) {
  while (true) {
    check();
    const std::uint32_t seen = epoch.load(std::memory_order_seq_cst);
    sleepers.fetch_add(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with notify_sleepers' fence
    if (ready()) {
      sleepers.fetch_sub(1, std::memory_order_relaxed);
      return true;
    }
    sleep(seen, deadline);
    sleepers.fetch_sub(1, std::memory_order_relaxed);
    if (ready()) return true;
    if (Clock::now() >= deadline) return false;
  }
}

class Parker {
public:
  // Wakes every waiter whose condition may have changed. Call after publishing the change.
  // Without a parked waiter it only reads (notify_sleepers).
  void notify() noexcept;

  // Waits until `ready()` is true (returns true) or the deadline passes (returns false),
  // offering the core while it spins where `offer()` says so (spin_until).
  template <class Ready, class Offer>
  bool wait_until(Ready&& ready, Deadline deadline, Offer&& offer) {
    if (ready()) return true;
    if (spin_until(ready, deadline, spin_budget(), offer)) return true;
    return park_until(ready, epoch_, sleepers_, deadline,
                      [this](std::uint32_t seen, Deadline until) { park(seen, until); }, [] {});
  }

  // The same for a wait that cannot tell where its peer runs: the core is offered every 64 polls.
  template <class Ready>
  bool wait_until(Ready&& ready, Deadline deadline) {
    return wait_until(ready, deadline, [] { return true; });
  }

private:
  // futex wait while epoch_ == seen, until a wake-up or the deadline.
  void park(std::uint32_t seen, Deadline deadline) noexcept;

  std::atomic<std::uint32_t> epoch_{0};
  std::atomic<std::uint32_t> sleepers_{0};
};

}  // namespace rankmesh
