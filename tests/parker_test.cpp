// Parker and the spinner slots (transports/parker.hpp): a notify reaches a waiter that parks at
// once, however the two interleave — in one process (Parker) and through words in shared memory
// (shm_segment.hpp's wait_for and notify, the same protocol) — and no more waiters spin at a time
// than the policy allows.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "parker.hpp"
#include "shm/shm_segment.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

namespace {

// Sets the process-wide spin policy for one test and puts the default back after it.
struct ScopedSpinPolicy {
  explicit ScopedSpinPolicy(const SpinPolicy& policy) { set_spin_policy(policy); }
  ~ScopedSpinPolicy() { set_spin_policy(SpinPolicy{}); }
};

// One side of a conversation that waits and notifies through a Parker.
struct ParkerSide {
  Parker parker;
  template <class Ready>
  bool wait(Ready&& ready, Deadline deadline) {
    return parker.wait_until(ready, deadline);
  }
  void notify() { parker.notify(); }
};

// The same through a futex word pair as it would sit in a shared segment. Its slices are as long
// as the wait, so that a lost wake-up is not hidden by a slice ending.
struct ShmWordsSide {
  std::uint32_t epoch = 0;
  std::uint32_t sleepers = 0;
  template <class Ready>
  bool wait(Ready&& ready, Deadline deadline) {
    return shm::wait_for(ready, epoch, sleepers, deadline, spin_budget(), 10s, [] {});
  }
  void notify() { shm::notify(epoch, sleepers); }
};

// `messages` messages echoed between two threads with no spinning: every wait that finds nothing
// parks, so each message races a notify against the waiter counting itself in and parking. A
// lost wake-up would sleep to the deadline. Published with release stores, the weakest that
// notify allows: its fence does the rest. The number of messages answered.
template <class Side>
std::uint64_t echo_messages(std::uint64_t messages) {
  std::atomic<std::uint64_t> sent{0}, echoed{0};
  Side to_echo, to_sender;
  std::atomic<bool> echo_ok{true};
  std::thread echo([&] {
    for (std::uint64_t i = 1; i <= messages; ++i) {
      auto arrived = [&] { return sent.load(std::memory_order_acquire) >= i; };
      if (!to_echo.wait(arrived, Clock::now() + 10s)) {
        echo_ok = false;
        return;
      }
      echoed.store(i, std::memory_order_release);
      to_sender.notify();
    }
  });
  std::uint64_t answered = 0;
  for (std::uint64_t i = 1; i <= messages; ++i) {
    sent.store(i, std::memory_order_release);
    to_echo.notify();
    auto back = [&] { return echoed.load(std::memory_order_acquire) >= i; };
    if (!to_sender.wait(back, Clock::now() + 10s)) break;
    answered = i;
  }
  echo.join();
  return echo_ok.load() ? answered : 0;
}

}  // namespace

TEST_CASE("parker: a notify never misses a waiter that parks at once") {
  ScopedSpinPolicy no_spin({.spin_for = 0ns});
  CHECK(echo_messages<ParkerSide>(20'000) == 20'000);
}

TEST_CASE("shm words: a notify never misses a waiter that parks at once, and without a sleeper "
          "it writes nothing") {
  ScopedSpinPolicy no_spin({.spin_for = 0ns});
  CHECK(echo_messages<ShmWordsSide>(20'000) == 20'000);
  // Nobody sleeps: the epoch the waiter polls stays as it was (a locked add per notify took the
  // line from the waiter's core on every message).
  ShmWordsSide side;
  side.notify();
  CHECK(side.epoch == 0);
}

TEST_CASE("parker: a wait whose condition never holds returns false at its deadline") {
  Parker parker;
  auto never = [] { return false; };
  CHECK_FALSE(parker.wait_until(never, Clock::now() + 20ms));
}

TEST_CASE("spinner slots: no more spinners at a time than the policy allows") {
  ScopedSpinPolicy two({.max_spinners = 2});
  std::atomic<int> holding{0}, held{0};
  std::atomic<bool> let_go{false};
  auto hold_one = [&] {
    const int slot = detail::acquire_spinner();
    held.fetch_add(slot >= 0 ? 1 : 0);
    holding.fetch_add(1);
    while (!let_go.load()) std::this_thread::yield();
    if (slot >= 0) detail::release_spinner(slot);
  };
  std::thread first(hold_one), second(hold_one);
  while (holding.load() < 2) std::this_thread::yield();
  CHECK(held.load() == 2);
  if (held.load() == 2) {
    // Both slots are held: a third waiter gets none, and spin_until gives up without polling.
    CHECK(detail::acquire_spinner() < 0);
    int polls = 0;
    auto count_polls = [&] { return ++polls, false; };
    CHECK_FALSE(spin_until(count_polls, Clock::now() + 1s, 1s));
    CHECK(polls == 0);
  }
  let_go = true;
  first.join();
  second.join();
  // Released, a slot is free again; with one slot allowed, only one holder at a time.
  set_spin_policy({.max_spinners = 1});
  const int mine = detail::acquire_spinner();
  REQUIRE(mine >= 0);
  std::thread other([] { CHECK(detail::acquire_spinner() < 0); });
  other.join();
  detail::release_spinner(mine);
  std::thread again([] {
    const int slot = detail::acquire_spinner();
    CHECK(slot >= 0);
    if (slot >= 0) detail::release_spinner(slot);
  });
  again.join();
}

TEST_CASE("spin policy: a node's cores are shared out among its processes, one spinner each at least") {
  const auto spin = std::chrono::microseconds(50);
  // Fewer processes than cores: each gets its share; every wait kind spins.
  SpinPolicy alone = SpinPolicy::for_node(spin, 1, 8);
  CHECK(alone.spin_for == spin);
  CHECK(alone.max_spinners == 8);
  CHECK(alone.sockets_spin);
  CHECK(SpinPolicy::for_node(spin, 3, 8).max_spinners == 2);
  CHECK(SpinPolicy::for_node(spin, 2, 2).max_spinners == 1);
  CHECK(SpinPolicy::for_node(spin, 2, 2).sockets_spin);
  // More processes than cores: one spinner per process, on memory only.
  SpinPolicy crowded = SpinPolicy::for_node(spin, 16, 2);
  CHECK(crowded.max_spinners == 1);
  CHECK_FALSE(crowded.sockets_spin);
  CHECK(crowded.spin_for == spin);
  // Nonsense counts are read as one.
  CHECK(SpinPolicy::for_node(spin, 0, 0).max_spinners == 1);
  CHECK(SpinPolicy::for_node(spin, 0, 0).sockets_spin);
}
