#include "shm_segment.hpp"

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
#include <thread>
#include <ctime>
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

Mapping create_segment(std::size_t bytes, std::string& name) {
  char suffix[17];
  std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(random_u64()));
  name = "/rankmesh-" + std::to_string(getpid()) + "-" + suffix;
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "shm_open " + name);
  void* base = MAP_FAILED;
  if (ftruncate(fd, static_cast<off_t>(bytes)) == 0)
    base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  const int error = errno;
  ::close(fd);
  if (base == MAP_FAILED) {
    shm_unlink(name.c_str());
    throw std::system_error(error, std::generic_category(), "mapping shm segment " + name);
  }
  return Mapping{static_cast<std::uint8_t*>(base), bytes};
}

Mapping open_segment(const std::string& name, std::size_t min_bytes, std::size_t max_bytes,
                     const char* kind) {
  const int fd = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "shm_open " + name);
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    throw std::system_error(error, std::generic_category(), "fstat " + name);
  }
  const auto bytes = static_cast<std::size_t>(st.st_size);
  if (bytes < min_bytes || bytes > max_bytes) {
    ::close(fd);
    throw Error(Errc::invalid_argument, "shm segment " + name + " is not a " + kind + " (" +
                                            std::to_string(bytes) + " bytes)");
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  const int error = errno;
  ::close(fd);
  if (base == MAP_FAILED)
    throw std::system_error(error, std::generic_category(), "mapping shm segment " + name);
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
