// Test helpers for two-process tests of the shared-memory transports. A test forks: the child
// touches only its own transport object and leaves with _exit() (its exit code says what went
// wrong); the parent reaps it within a bound and kills it on failure.
#pragma once

#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

#include "deadline.hpp"

namespace rankmesh::testing {

using namespace std::chrono_literals;



// Checks in a child: on failure, say where on stderr and leave with the line number.
#define CHILD_REQUIRE(cond)                                                             \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond);   \
      return __LINE__ % 200 + 50;                                                       \
    }                                                                                   \
  } while (0)

class Child {
public:
  // Runs `body` (returning an exit code) in a forked child.
  template <class Body>
  explicit Child(Body body) {
    std::fflush(nullptr);  // the child must not write out the parent's buffered output
    pid_ = started_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      int code = 40;
      try {
        code = body();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child failed: %s\n", e.what());
        code = 41;
      } catch (...) {
        code = 42;
      }
      _exit(code);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // The child's pid (still known after wait()).
  pid_t pid() const { return started_; }
  void kill() const {
    if (pid_ > 0) ::kill(pid_, SIGKILL);
  }

  // Waits at most `limit` for the child to end (killing it after that); returns its exit code,
  // or -signal when a signal ended it.
  int wait(std::chrono::milliseconds limit = 30s) {
    const Deadline deadline = deadline_after(limit);
    int status = 0;
    while (true) {
      pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_) break;
      if (Clock::now() >= deadline) {
        ::kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        pid_ = -1;
        FAIL("child did not finish within " << limit.count() << " ms");
        return -1000;
      }
      // Not synchronization: bounded polling for the child's end.
      int fd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
      if (fd >= 0) {
        pollfd p{fd, POLLIN, 0};
        poll(&p, 1, 100);
        ::close(fd);
      } else {
        std::this_thread::sleep_for(1ms);
      }
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }

private:
  pid_t pid_ = -1;  // until reaped
  pid_t started_ = -1;
};

// One-way messages between parent and child (a name, "go").
class Pipe {
public:
  Pipe() { REQUIRE(pipe2(fds_, O_CLOEXEC) == 0); }
  ~Pipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  void put(const std::string& line) const {
    std::string text = line + "\n";
    [[maybe_unused]] ssize_t n = ::write(fds_[1], text.data(), text.size());
  }
  // The next line, or "" when none comes within `limit`.
  std::string get(std::chrono::milliseconds limit = 10s) const {
    std::string line;
    const Deadline deadline = deadline_after(limit);
    while (Clock::now() < deadline) {
      pollfd p{fds_[0], POLLIN, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (poll(&p, 1, static_cast<int>(left.count()) + 1) <= 0) continue;
      char c;
      if (::read(fds_[0], &c, 1) != 1) return "";
      if (c == '\n') return line;
      line += c;
    }
    return "";
  }

private:
  int fds_[2];
};

// Names in /dev/shm created by any of `pids`.
inline std::vector<std::string> shm_leftovers(std::initializer_list<pid_t> pids) {
  std::vector<std::string> found;
  DIR* dir = opendir("/dev/shm");
  if (dir == nullptr) return found;
  while (dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    for (pid_t pid : pids)
      if (name.rfind("rankmesh-" + std::to_string(pid) + "-", 0) == 0) found.push_back(name);
  }
  closedir(dir);
  return found;
}

}  // namespace rankmesh::testing
