#include "shm/shm_segment.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>
#include <thread>
#include <system_error>
#include <utility>

#include "rankmesh/error.hpp"

namespace rankmesh::shm {

std::uint64_t random_u64() {
  std::uint64_t value = 0;
  if (getrandom(&value, sizeof value, 0) != static_cast<ssize_t>(sizeof value))
    throw std::system_error(errno, std::generic_category(), "getrandom");
  return value;
}

namespace {

[[noreturn]] void throw_errno(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), what);
}

}  // namespace

Mapping create_segment(std::size_t bytes, std::string& name, int& handoff, bool populate) {
  const int fd = memfd_create("rankmesh", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw_errno(errno, "memfd_create");
  void* base = MAP_FAILED;
  struct stat st {};
  // 0600 although nobody can reach a memfd by name: the opener insists on it, as on the owner.
  // The size is sealed so that a peer cannot shrink the segment under our mapping (SIGBUS).
  if (fchmod(fd, 0600) == 0 && ftruncate(fd, static_cast<off_t>(bytes)) == 0 &&
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0 && fstat(fd, &st) == 0)
    base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0),
                fd, 0);
  if (base == MAP_FAILED) {
    const int error = errno;
    ::close(fd);
    throw_errno(error, "making a shared-memory segment of " + std::to_string(bytes) + " bytes");
  }
  name = "/proc/" + std::to_string(getpid()) + "/fd/" + std::to_string(fd) + "#" +
         std::to_string(st.st_ino);
  handoff = fd;
  return Mapping{static_cast<std::uint8_t*>(base), bytes};
}

void end_handoff(int handoff) noexcept {
  if (handoff >= 0) ::close(handoff);
}

namespace {

struct SegmentName {
  int pid = 0;
  int fd = -1;
  unsigned long long inode = 0;
  std::string path;  // /proc/<pid>/fd/<fd>
};

std::optional<SegmentName> parse_name(const std::string& name) {
  SegmentName parsed;
  int consumed = 0;
  if (std::sscanf(name.c_str(), "/proc/%d/fd/%d#%llu%n", &parsed.pid, &parsed.fd, &parsed.inode,
                  &consumed) != 3 ||
      static_cast<std::size_t>(consumed) != name.size() || parsed.pid <= 0 || parsed.fd < 0)
    return std::nullopt;
  parsed.path = name.substr(0, name.find('#'));
  return parsed;
}

// The creator's descriptor, made ours. pidfd_getfd where the kernel allows it: one system call,
// where a path lookup in /proc costs 100-300 µs on the first message of a pair in a VM (it
// makes the creator's /proc entries). Else through /proc, which Yama's ptrace_scope does not
// restrict (see shm_segment.hpp). Either way the caller checks what it got (inode, owner, mode).
// Not for a segment of our own process (ranks of one process, tests): there the pidfd could
// take the number of the descriptor just closed and fetch itself.
int take_descriptor(const SegmentName& name) {
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_getfd)
  const int pidfd = name.pid == getpid() ? -1 : static_cast<int>(syscall(SYS_pidfd_open, name.pid, 0));
  if (pidfd >= 0) {
    const int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, name.fd, 0));  // close-on-exec
    ::close(pidfd);
    if (fd >= 0) return fd;
  }
#endif
  return ::open(name.path.c_str(), O_RDWR | O_CLOEXEC);
}

}  // namespace

int creator_of(const std::string& name) noexcept {
  try {
    const std::optional<SegmentName> parsed = parse_name(name);
    return parsed ? parsed->pid : 0;
  } catch (...) {
    return 0;
  }
}

Mapping open_segment(const std::string& name, std::size_t min_bytes, std::size_t max_bytes,
                     const char* kind, int expected_creator, bool populate) {
  const std::optional<SegmentName> parsed = parse_name(name);
  if (!parsed)
    throw Error(Errc::malformed, "'" + name + "' does not name a shared-memory segment");
  if (expected_creator != 0 && parsed->pid != expected_creator)
    throw Error(Errc::peer_failed, "shm segment " + name + " is offered by pid " +
                                            std::to_string(parsed->pid) + ", not by pid " +
                                            std::to_string(expected_creator) + " (the peer)");
  const int fd = take_descriptor(*parsed);
  if (fd < 0)
    throw_errno(errno, "opening shm segment " + name + " (its creator, pid " +
                           std::to_string(parsed->pid) + ", has exited or no longer offers it)");
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    throw_errno(error, "fstat " + name);
  }
  std::string problem;
  if (st.st_ino != parsed->inode || !S_ISREG(st.st_mode))
    problem = "is another file now (inode " + std::to_string(st.st_ino) + ")";
  else if (st.st_uid != geteuid())
    problem = "belongs to uid " + std::to_string(st.st_uid) + ", not to this user (uid " +
              std::to_string(geteuid()) + ")";
  else if ((st.st_mode & 07777) != 0600) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    problem = std::string("has mode ") + mode + ", not 0600";
  }
  const auto bytes = static_cast<std::size_t>(st.st_size);
  if (problem.empty() && (bytes < min_bytes || bytes > max_bytes))
    problem = std::string("is not a ") + kind + " (" + std::to_string(bytes) + " bytes)";
  if (!problem.empty()) {
    ::close(fd);
    throw Error(Errc::peer_failed, "shm segment " + name + " " + problem);
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0),
                    fd, 0);
  const int error = errno;
  ::close(fd);
  if (base == MAP_FAILED) throw_errno(error, "mapping shm segment " + name);
  return Mapping{static_cast<std::uint8_t*>(base), bytes};
}

void unmap(Mapping mapping) noexcept {
  if (mapping.base != nullptr) munmap(mapping.base, mapping.bytes);
}

void futex_wait(std::uint32_t* word, std::uint32_t seen, Deadline until) noexcept {
  const auto left = until - Clock::now();
  if (left <= Clock::duration::zero()) return;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
  timespec timeout{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  // Not FUTEX_PRIVATE: the word is shared with another process. A wake between the caller's
  // read of the word and this call changes it, so the kernel returns at once.
  syscall(SYS_futex, word, FUTEX_WAIT, seen, &timeout, nullptr, 0);
}

void futex_wake(std::uint32_t* word) noexcept {
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

namespace {
enum : std::uint32_t { kOpen = 0, kClosing = 1, kClosed = 2 };
}

void close(Closure& closure, const std::string& reason) noexcept {
  std::uint32_t expected = kOpen;
  if (!at(closure.state).compare_exchange_strong(expected, kClosing)) return;
  const std::size_t n = std::min(reason.size(), sizeof closure.reason - 1);
  std::memcpy(closure.reason, reason.data(), n);
  closure.reason[n] = '\0';
  at(closure.state).store(kClosed, std::memory_order_release);
}

bool is_closed(const Closure& closure) noexcept {
  return at(const_cast<std::uint32_t&>(closure.state)).load(std::memory_order_acquire) != kOpen;
}

std::string reason_of(const Closure& closure, const std::string& fallback) {
  auto state = [&] {
    return at(const_cast<std::uint32_t&>(closure.state)).load(std::memory_order_acquire);
  };
  for (int i = 0; state() == kClosing && i < 10000; ++i) std::this_thread::yield();
  if (state() != kClosed) return fallback;
  return std::string(closure.reason, strnlen(closure.reason, sizeof closure.reason));
}

ProcessWatch::ProcessWatch(int pid) : pid_(pid) {
#ifdef SYS_pidfd_open
  pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#endif
}

ProcessWatch::~ProcessWatch() {
  if (pidfd_ >= 0) ::close(pidfd_);
}

ProcessWatch::ProcessWatch(ProcessWatch&& other) noexcept
    : pid_(std::exchange(other.pid_, 0)), pidfd_(std::exchange(other.pidfd_, -1)) {}

ProcessWatch& ProcessWatch::operator=(ProcessWatch&& other) noexcept {
  if (this != &other) {
    if (pidfd_ >= 0) ::close(pidfd_);
    pid_ = std::exchange(other.pid_, 0);
    pidfd_ = std::exchange(other.pidfd_, -1);
  }
  return *this;
}

bool ProcessWatch::alive() const noexcept {
  if (pid_ <= 0) return true;  // nobody to watch yet
  if (pidfd_ >= 0) {
    pollfd fd{pidfd_, POLLIN, 0};
    return poll(&fd, 1, 0) == 0;  // a pidfd turns readable when its process has exited
  }
  return !(kill(pid_, 0) != 0 && errno == ESRCH);
}

bool ProcessWatch::exits_within(std::chrono::milliseconds limit) const noexcept {
  if (pidfd_ < 0) return !alive();
  pollfd fd{pidfd_, POLLIN, 0};
  return poll(&fd, 1, static_cast<int>(limit.count())) > 0;
}

}  // namespace rankmesh::shm
