// What the shared-memory transports (ShmChannel, ShmBroadcastRing) have in common: anonymous
// segments that the creator offers to its peers until they have attached, futex waits on words
// inside them, and watching the process at the other end through a pidfd.
//
// A segment is a memfd, never a name in /dev/shm: the kernel frees it once the last mapping and
// descriptor are gone, so a process killed at any moment (SIGKILL included, before or after its
// peer attached) leaves nothing behind, and nobody has to sweep. The creator keeps the memfd open
// while peers may still attach; its "name" is "/proc/<pid>/fd/<fd>#<inode>", which a peer takes
// with pidfd_getfd (one system call) or, where that is refused, opens through /proc. Opening
// another process's descriptor through /proc needs the same rights over that process as reading
// its /proc entries (same user, or CAP_SYS_PTRACE; ptrace_may_access READ, which Yama's
// ptrace_scope does not restrict, unlike pidfd_getfd and process_vm_readv, which need ATTACH) —
// the protection a 0600 name in /dev/shm had. The opener checks the inode (a descriptor number
// reused for another file is refused), the owner (this user) and the mode (0600).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "deadline.hpp"
#include "parker.hpp"

namespace rankmesh::shm {

// Both processes touch the segment's plain integers through this.
template <class T>
std::atomic_ref<T> at(T& value) noexcept {
  return std::atomic_ref<T>(value);
}

struct Mapping {
  std::uint8_t* base = nullptr;
  std::size_t bytes = 0;
};

// A new segment of `bytes` (zero-filled, mapped, mode 0600, its size sealed). `name` gets the
// name peers open it by; `handoff` the descriptor that must stay open until they have
// (end_handoff). `populate`: its pages are made now (no faults later); else each page is made
// when first touched, so that a segment sized for its peak holds only what is used. Throws
// std::system_error.
Mapping create_segment(std::size_t bytes, std::string& name, int& handoff, bool populate = true);
// Closes the creator's descriptor: nobody can attach any more (those attached keep the segment).
void end_handoff(int handoff) noexcept;
// The pid in a segment name, 0 when `name` is not one.
int creator_of(const std::string& name) noexcept;
// Maps the existing segment `name` (as a peer offered it). A name that is not a segment's is
// Error(malformed). The segment must be this user's, mode 0600, and (unless `expected_creator`
// is 0) offered by that pid, else Error(peer_failed) saying what is wrong: the peer's offer
// cannot be trusted; its size must lie in [min_bytes, max_bytes], else Error(peer_failed)
// saying it is not a `kind`. Throws std::system_error when it cannot be opened (its creator
// exited or stopped offering it). `populate` as for create_segment (populating a shared mapping makes the pages).
Mapping open_segment(const std::string& name, std::size_t min_bytes, std::size_t max_bytes,
                     const char* kind, int expected_creator = 0, bool populate = true);
void unmap(Mapping mapping) noexcept;

// Sleeps while *word == seen (another process may change it), until `until` or a wake-up.
void futex_wait(std::uint32_t* word, std::uint32_t seen, Deadline until) noexcept;
// Wakes every process sleeping on *word.
void futex_wake(std::uint32_t* word) noexcept;

// A word pair in the segment that lets one side sleep until the other has news (wait_for):
// parker.hpp's protocol, across processes. Call after publishing the news; without a sleeper it
// only reads.
inline void notify(std::uint32_t& epoch, std::uint32_t& sleepers) noexcept {
  notify_sleepers(at(epoch), at(sleepers), [&epoch] { futex_wake(&epoch); });
}

// "Closed, and why", in a segment both sides read. Whoever closes first writes the reason.
struct Closure {
  std::uint32_t state;  // 0 open, 1 the closer is writing the reason, 2 closed
  std::uint32_t unused;
  char reason[512];
};
// Closes with `reason` unless it is closed already (then the first reason stays).
void close(Closure& closure, const std::string& reason) noexcept;
bool is_closed(const Closure& closure) noexcept;
// The reason, or `fallback` when the closer never finished writing it.
std::string reason_of(const Closure& closure, const std::string& fallback);

// Where the two sides of a segment last ran: words in the segment holding a CPU number + 1 (0:
// not known), this side's and the peer's, noted on every send, receive and wait. A spinning
// waiter offers its core only to a peer last seen on that core, or not seen yet (parker.hpp);
// without them (null) it offers it every time.
struct Cores {
  std::uint32_t* mine = nullptr;
  std::uint32_t* peer = nullptr;
};

// Notes in `word`, in shared memory, where this thread runs now (parker.hpp's note_cpu).
inline std::uint32_t note_cpu(std::uint32_t& word) noexcept { return rankmesh::note_cpu(at(word)); }

// Waits until `ready()` (true) or the deadline (false): spins for up to `spin` first (parker.hpp),
// then parks on `epoch` in slices of `slice`, calling `check()` before each — it throws when the
// other side is gone. `ready` must not throw (it only reads the segment).
template <class Ready, class Check>
bool wait_for(Ready&& ready, std::uint32_t& epoch, std::uint32_t& sleepers, Deadline deadline,
              std::chrono::nanoseconds spin, std::chrono::nanoseconds slice, Check&& check,
              Cores cores = {}) {
  if (ready()) return true;
  if (cores.mine != nullptr) note_cpu(*cores.mine);
  auto peer_here = [&] {
    return cores.mine == nullptr || peer_runs_here(at(*cores.mine), at(*cores.peer));
  };
  if (spin_until(ready, deadline, spin, peer_here)) return true;
  auto sleep = [&epoch, slice](std::uint32_t seen, Deadline until) {
    futex_wait(&epoch, seen, std::min(until, Clock::now() + slice));
  };
  return park_until(ready, at(epoch), at(sleepers), deadline, sleep, check);
}

// Another process of this node, watched through a pidfd where the kernel offers them (a pidfd
// cannot be fooled by pid reuse), else through kill(pid, 0).
class ProcessWatch {
public:
  ProcessWatch() = default;
  explicit ProcessWatch(int pid);
  ~ProcessWatch();
  ProcessWatch(ProcessWatch&& other) noexcept;
  ProcessWatch& operator=(ProcessWatch&& other) noexcept;

  int pid() const noexcept { return pid_; }
  bool watching() const noexcept { return pid_ > 0; }
  // True while the process has not exited (a zombie counts as exited).
  bool alive() const noexcept;
  // Waits up to `limit` for the process to exit; true if it has.
  bool exits_within(std::chrono::milliseconds limit) const noexcept;

private:
  int pid_ = 0;
  int pidfd_ = -1;
};

// 64 random bits from the kernel (probe words). Throws std::system_error.
std::uint64_t random_u64();

}  // namespace rankmesh::shm
