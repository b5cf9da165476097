#include "supervisor.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

namespace rankmesh::tool {
namespace {

using Clock = std::chrono::steady_clock;

// Ending the tree waits at most this long for its processes to die: SIGKILL ends a process
// unless it is stuck in the kernel, and the supervisor must exit even then.
constexpr std::chrono::milliseconds kEndPatience{5000};
// While the rank runs, the rank is re-checked at least this often, so that its exit does not
// depend on a single SIGCHLD.
constexpr int kTickMs = 1000;
// Status of a supervisor that could not start its rank; the rank's own exec failure is 127.
constexpr int kSetupFailed = 126;

// Writes "rankmesh launch: supervisor: <what>[: <reason>]" to stderr (the rank's stderr pipe)
// and exits.
[[noreturn]] void fail(const char* what, const char* reason = nullptr) {
  for (const char* part : {"rankmesh launch: supervisor: ", what, reason ? ": " : "", reason ? reason : "", "\n"})
    (void)!::write(STDERR_FILENO, part, std::strlen(part));
  ::_exit(kSetupFailed);
}

// fail() with the reason errno gives.
[[noreturn]] void fail_errno(const char* what) { fail(what, std::strerror(errno)); }

// The processes whose parent is `parent`, zombies included. /proc/PID/task/TID/children would
// be shorter but needs CONFIG_PROC_CHILDREN, which not every kernel has.
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> children;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return children;
  while (dirent* entry = ::readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    // Plain read(): a process that exits while we read fails it with ESRCH, which std::ifstream
    // would turn into an exception.
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    char stat[512];
    ssize_t n = ::read(fd, stat, sizeof stat - 1);
    ::close(fd);
    if (n <= 0) continue;
    stat[n] = '\0';
    // "PID (COMM) STATE PPID ...": COMM may hold anything, ')' included, so read past the last
    // one (COMM is at most 16 bytes, so the fields we need are within the first 512).
    const char* paren = std::strrchr(stat, ')');
    char state = 0;
    long ppid = 0;
    if (paren != nullptr && std::sscanf(paren + 1, " %c %ld", &state, &ppid) == 2 && ppid == parent)
      children.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(proc);
  return children;
}

class Supervisor {
public:
  explicit Supervisor(const SupervisedRank& rank) : rank_(rank) {}

  [[noreturn]] void run() {
    // Every signal arrived blocked (the launcher forks with all of them blocked): route the ones
    // we act on through a signalfd, and let the others take their default action again.
    sigemptyset(&routed_);
    for (int sig : kForwardedSignals) sigaddset(&routed_, sig);
    sigaddset(&routed_, SIGCHLD);
    sigaddset(&routed_, kEndTreeSignal);
    if (::sigprocmask(SIG_SETMASK, &routed_, nullptr) != 0) fail_errno("sigprocmask");
    // Die with the launcher: the kernel sends kEndTreeSignal when it exits, however it does
    // (the signal follows the parent thread, and the launcher has only one). If it died before
    // prctl() took effect we already have another parent, and nothing has started yet.
    if (::prctl(PR_SET_PDEATHSIG, kEndTreeSignal) != 0) fail_errno("prctl(PR_SET_PDEATHSIG)");
    if (::getppid() != rank_.launcher) ::_exit(kSetupFailed);
    // Orphans of the rank's tree become our children instead of init's, so that we can end them.
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) fail_errno("prctl(PR_SET_CHILD_SUBREAPER)");
    // A process group of our own: the terminal's signals reach the launcher only, which forwards
    // them once (the launcher does the same setpgid; whichever runs first wins).
    ::setpgid(0, 0);
    if (::dup2(rank_.stdin_fd, STDIN_FILENO) < 0 || ::dup2(rank_.stdout_fd, STDOUT_FILENO) < 0 ||
        ::dup2(rank_.stderr_fd, STDERR_FILENO) < 0)
      fail_errno("dup2");
    signals_ = ::signalfd(-1, &routed_, SFD_CLOEXEC | SFD_NONBLOCK);
    if (signals_ < 0) fail_errno("signalfd");

    start_rank();
    while (true) {
      pollfd readable{signals_, POLLIN, 0};
      if (::poll(&readable, 1, kTickMs) < 0 && errno != EINTR) fail_errno("poll");
      bool child_changed = false;
      signalfd_siginfo info;
      while (::read(signals_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
        int sig = static_cast<int>(info.ssi_signo);
        if (sig == kEndTreeSignal) end_tree_and_exit();
        if (sig == SIGCHLD)
          child_changed = true;
        else
          forward(sig);
      }
      if (rank_exited()) end_tree_and_exit();
      // Orphans that exit while the rank runs are reaped as they go, not left as zombies.
      if (child_changed) reap_orphans();
    }
  }

private:
  void start_rank() {
    const pid_t supervisor = ::getpid();
    // vfork, not fork: the child only sets itself up and execs, and a fork would copy the
    // supervisor's page tables and make every page either side writes fault on its copy
    // (tens of µs each in a VM) just for exec to throw them away, 64 times over in a world of
    // 64 ranks starting at once. The supervisor waits the few syscalls until the exec.
    const pid_t pid = ::vfork();
    if (pid < 0) fail_errno("vfork");
    if (pid == 0) {
      // Only async-signal-safe calls, no writes to our memory, until exec (the child borrows the
      // supervisor's memory and stack). The rank leads its own process group, which the
      // supervisor signals and, at the end, kills; it also dies if its supervisor is killed
      // outright.
      ::setpgid(0, 0);
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != supervisor) ::_exit(kSetupFailed);
      ::sigprocmask(SIG_SETMASK, &rank_.rank_mask, nullptr);
      if (rank_.handed_fd >= 0 && ::fcntl(rank_.handed_fd, F_SETFD, 0) != 0) ::_exit(kSetupFailed);
      ::execvpe(rank_.argv[0], rank_.argv, rank_.envp);
      const char* reason = std::strerror(errno);
      (void)!::write(STDERR_FILENO, rank_.exec_failed, std::strlen(rank_.exec_failed));
      (void)!::write(STDERR_FILENO, reason, std::strlen(reason));
      (void)!::write(STDERR_FILENO, "\n", 1);
      ::_exit(127);
    }
    rank_pid_ = pid;
    ::setpgid(rank_pid_, rank_pid_);
    if (rank_.handed_fd >= 0) ::close(rank_.handed_fd);  // the rank's now
  }

  // The rank's process group holds its descendants unless they moved; the rank itself is
  // signalled by pid too, should it have left its group. Its pid and group id stay ours until
  // we reap it, so neither can name a stranger.
  void forward(int sig) {
    ::kill(-rank_pid_, sig);
    if (::getpgid(rank_pid_) != rank_pid_) ::kill(rank_pid_, sig);
  }

  // Whether the rank has exited; it stays a zombie (WNOWAIT) until the tree is ended.
  bool rank_exited() {
    siginfo_t info{};
    return ::waitid(P_PID, static_cast<id_t>(rank_pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == rank_pid_;
  }

  // Reaps whatever orphan of the rank's tree has exited, never the rank itself. Returns whether
  // any child but the rank is left (running or not yet reaped).
  bool reap_orphans() {
    bool left = false;
    for (pid_t child : children_of(::getpid())) {
      if (child == rank_pid_) continue;
      if (::waitpid(child, nullptr, WNOHANG) != child) left = true;
    }
    return left;
  }

  // Kills the rank's process group and every child of ours, again as each death hands us its
  // own children, until none but the rank's zombie is left; then exits as the rank did.
  [[noreturn]] void end_tree_and_exit() {
    const Clock::time_point give_up = Clock::now() + kEndPatience;
    while (true) {
      ::kill(-rank_pid_, SIGKILL);
      for (pid_t child : children_of(::getpid())) ::kill(child, SIGKILL);
      bool orphans_left = reap_orphans();
      if ((!orphans_left && rank_exited()) || Clock::now() >= give_up) break;
      // Woken by the next SIGCHLD, or soon: a death may hand us children without one.
      pollfd readable{signals_, POLLIN, 0};
      ::poll(&readable, 1, 10);
      signalfd_siginfo info;
      while (::read(signals_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
      }
    }
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(rank_pid_), &info, WEXITED | WNOHANG) != 0 ||
        info.si_pid != rank_pid_) {
      info.si_code = CLD_KILLED;  // stuck in the kernel past our patience: report our SIGKILL
      info.si_status = SIGKILL;
    }
    exit_as(info);
  }

  // Exits with the rank's status, or dies of the signal that killed it (without a core of
  // our own: the rank's, if any, is the one that matters).
  [[noreturn]] static void exit_as(const siginfo_t& rank_exit) {
    if (rank_exit.si_code == CLD_EXITED) ::_exit(rank_exit.si_status);
    const int sig = rank_exit.si_status;
    rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::signal(sig, SIG_DFL);
    sigset_t just_that;
    sigemptyset(&just_that);
    sigaddset(&just_that, sig);
    ::sigprocmask(SIG_UNBLOCK, &just_that, nullptr);
    ::raise(sig);
    ::_exit(128 + sig);
  }

  const SupervisedRank& rank_;
  sigset_t routed_;
  int signals_ = -1;
  pid_t rank_pid_ = -1;
};

}  // namespace

void supervise(const SupervisedRank& rank) {
  try {
    Supervisor(rank).run();
  } catch (const std::exception& error) {
    // Only an allocation can throw here (a vector of pids); the rank, if started, dies with us
    // (its death signal).
    fail(error.what());
  }
}

}  // namespace rankmesh::tool
