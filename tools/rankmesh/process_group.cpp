#include "process_group.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <system_error>
#include <utility>

namespace rankmesh::tool {
namespace {

using Clock = std::chrono::steady_clock;

// A line longer than this is relayed in pieces, so that a child that never writes a newline
// cannot grow the launcher without bound.
constexpr std::size_t kMaxLine = 64 * 1024;
// Once every child has exited, output still in the pipes is read for at most this long: a
// descendant that left the group could otherwise hold a pipe open forever.
constexpr std::chrono::milliseconds kDrain{1000};
// The loop wakes at least this often and re-checks every child, so that no state change
// depends on a single notification.
constexpr std::chrono::milliseconds kTick{1000};

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

class Fd {
public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

private:
  int fd_;
};

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n >= 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
    } else if (errno == EAGAIN) {
      // Our caller handed us a non-blocking stdout: wait for its reader instead of dropping lines.
      pollfd writable{fd, POLLOUT, 0};
      ::poll(&writable, 1, static_cast<int>(kTick.count()));
    } else if (errno != EINTR) {
      return;  // nobody reads our output any more; the children still run to their end
    }
  }
}

// One output stream of a child, relayed to `out` line by line behind the child's prefix.
struct Relay {
  Fd pipe;  // read end, closed at end of file
  int out = -1;
  std::string partial;  // what follows the last newline so far

  bool open() const { return pipe.get() >= 0; }

  void pump(const std::string& prefix) {
    char buffer[64 * 1024];
    ssize_t n = ::read(pipe.get(), buffer, sizeof buffer);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
      finish(prefix);
      return;
    }
    partial.append(buffer, static_cast<std::size_t>(n));
    std::string lines;
    std::size_t start = 0;
    for (std::size_t newline; (newline = partial.find('\n', start)) != std::string::npos; start = newline + 1)
      lines.append(prefix).append(partial, start, newline + 1 - start);
    partial.erase(0, start);
    if (partial.size() >= kMaxLine) {
      lines.append(prefix).append(partial).push_back('\n');
      partial.clear();
    }
    write_all(out, lines);
  }

  // Writes an unterminated last line as a whole one and closes the pipe.
  void finish(const std::string& prefix) {
    if (!partial.empty()) write_all(out, prefix + partial + "\n");
    partial.clear();
    pipe.reset();
  }
};

struct Child {
  pid_t pid = -1;
  std::string prefix;
  std::optional<ChildExit> exit;
  Relay stdout_relay;
  Relay stderr_relay;
};

// SIGINT, SIGTERM and SIGCHLD arrive through a signalfd while the group runs, so that the loop
// sees them between polls instead of in a handler.
class SignalRoute {
public:
  SignalRoute() {
    // A caller that ignores SIGCHLD would have the children reaped unseen, and they would inherit
    // that through exec; both need the default.
    ::signal(SIGCHLD, SIG_DFL);
    sigemptyset(&routed_);
    for (int sig : {SIGINT, SIGTERM, SIGCHLD}) sigaddset(&routed_, sig);
    if (::sigprocmask(SIG_BLOCK, &routed_, &previous_) != 0) throw_errno("sigprocmask");
    fd_.reset(::signalfd(-1, &routed_, SFD_CLOEXEC | SFD_NONBLOCK));
    if (fd_.get() < 0) {
      int error = errno;
      ::sigprocmask(SIG_SETMASK, &previous_, nullptr);
      errno = error;
      throw_errno("signalfd");
    }
  }
  ~SignalRoute() { ::sigprocmask(SIG_SETMASK, &previous_, nullptr); }
  SignalRoute(const SignalRoute&) = delete;
  SignalRoute& operator=(const SignalRoute&) = delete;

  int fd() const { return fd_.get(); }
  // The mask the children must start with: the one the caller had.
  const sigset_t& previous_mask() const { return previous_; }

  // The signals received since the last call, SIGCHLD left out (the loop re-checks children anyway).
  std::vector<int> take() {
    std::vector<int> received;
    signalfd_siginfo info;
    while (::read(fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info))
      if (info.ssi_signo != SIGCHLD) received.push_back(static_cast<int>(info.ssi_signo));
    return received;
  }

private:
  sigset_t routed_;
  sigset_t previous_;
  Fd fd_;
};

// The running children. They are reaped only by reap(), after all have exited: until then every
// child's pid, and the process group they share, stays theirs, so signalling by number cannot
// hit a stranger.
class Group {
public:
  ~Group() {
    // Reached with children left only when something threw: stop them. Whatever is still a
    // zombie here is reaped by init when the launcher exits.
    if (!children_.empty()) signal(SIGKILL);
  }

  std::vector<Child>& children() { return children_; }

  void spawn(const ChildSpec& spec, const sigset_t& mask, int dev_null) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw_errno("pipe");
    Fd out_read(out[0]), out_write(out[1]);
    if (::pipe2(err, O_CLOEXEC) != 0) throw_errno("pipe");
    Fd err_read(err[0]), err_write(err[1]);

    // Everything the child needs is prepared before fork(): after it, the child only calls
    // async-signal-safe functions until exec.
    std::vector<char*> argv, envp;
    for (const std::string& arg : spec.argv) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    for (const std::string& entry : spec.env) envp.push_back(const_cast<char*>(entry.c_str()));
    envp.push_back(nullptr);
    std::string exec_failed = "rankmesh launch: cannot execute '" + spec.argv[0] + "': ";
    pid_t launcher = ::getpid();
    pid_t group = pgid_;

    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid == 0) {
      // Die with the launcher, even when it is killed with SIGKILL (the signal follows the
      // parent thread, and the launcher has only one). If it died before prctl() took effect,
      // the child already has another parent and must not run at all.
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != launcher) ::_exit(126);
      // The first child founds the group, the others join it (the parent does the same below;
      // whichever runs first wins, and both agree).
      ::setpgid(0, group);
      if (::dup2(dev_null, 0) < 0 || ::dup2(out[1], 1) < 0 || ::dup2(err[1], 2) < 0) ::_exit(126);
      ::sigprocmask(SIG_SETMASK, &mask, nullptr);
      ::execvpe(argv[0], argv.data(), envp.data());
      // The launcher is single-threaded, so strerror() cannot meet a lock held by a lost thread.
      const char* reason = std::strerror(errno);
      (void)!::write(2, exec_failed.data(), exec_failed.size());
      (void)!::write(2, reason, std::strlen(reason));
      (void)!::write(2, "\n", 1);
      ::_exit(127);
    }
    ::setpgid(pid, group == 0 ? pid : group);
    if (pgid_ == 0) pgid_ = pid;

    Child& child = children_.emplace_back();
    child.pid = pid;
    child.prefix = spec.prefix;
    child.stdout_relay.pipe = std::move(out_read);
    child.stdout_relay.out = STDOUT_FILENO;
    child.stderr_relay.pipe = std::move(err_read);
    child.stderr_relay.out = STDERR_FILENO;
  }

  // Sends `sig` to the whole group (descendants included) and to any child that left it.
  void signal(int sig) {
    if (pgid_ > 0) ::kill(-pgid_, sig);
    for (const Child& child : children_)
      if (!child.exit && ::getpgid(child.pid) != pgid_) ::kill(child.pid, sig);
  }

  // Notes the children that exited since the last look and returns their indices, in order.
  std::vector<std::size_t> collect_exits() {
    std::vector<std::size_t> exited;
    for (std::size_t i = 0; i < children_.size(); ++i) {
      Child& child = children_[i];
      if (child.exit) continue;
      siginfo_t info{};
      // WNOWAIT leaves it a zombie, which keeps its pid and group reserved (see the class comment).
      if (::waitid(P_PID, static_cast<id_t>(child.pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == child.pid) {
        child.exit = ChildExit{info.si_code != CLD_EXITED, info.si_status};
        exited.push_back(i);
      }
    }
    return exited;
  }

  bool all_exited() const {
    return std::all_of(children_.begin(), children_.end(), [](const Child& c) { return c.exit.has_value(); });
  }

  bool output_open() const {
    return std::any_of(children_.begin(), children_.end(), [](const Child& c) {
      return c.stdout_relay.open() || c.stderr_relay.open();
    });
  }

  // Flushes what the children left unterminated and reaps them; only once all have exited.
  void reap() {
    for (Child& child : children_) {
      if (child.stdout_relay.open()) child.stdout_relay.finish(child.prefix);
      if (child.stderr_relay.open()) child.stderr_relay.finish(child.prefix);
      ::waitpid(child.pid, nullptr, 0);  // already a zombie: returns at once
    }
    children_.clear();
  }

private:
  std::vector<Child> children_;
  pid_t pgid_ = 0;  // the first child's pid, once it exists
};

int milliseconds_until(Clock::time_point when, Clock::time_point now) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(when - now);
  return static_cast<int>(std::max<std::int64_t>(left.count(), 0));
}

}  // namespace

GroupEnding run_process_group(const std::vector<ChildSpec>& specs,
                              std::optional<std::chrono::milliseconds> timeout,
                              std::chrono::milliseconds grace) {
  // Declared before the group, so that the group is stopped before the signal mask is restored.
  SignalRoute signals;
  Fd dev_null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (dev_null.get() < 0) throw_errno("/dev/null");
  Group group;
  // Children read /dev/null: they run in a background process group, where reading a terminal
  // would stop them.
  for (const ChildSpec& spec : specs) group.spawn(spec, signals.previous_mask(), dev_null.get());

  GroupEnding ending;
  bool stopping = false;
  bool killed = false;
  const Clock::time_point started = Clock::now();
  std::optional<Clock::time_point> kill_at;      // SIGKILL whoever still runs then
  std::optional<Clock::time_point> drain_until;  // set once every child has exited
  auto stop = [&](int sig, Clock::time_point now) {
    stopping = true;
    group.signal(sig);
    if (!kill_at) kill_at = now + grace;
  };

  std::vector<pollfd> polled;
  std::vector<std::pair<Relay*, const std::string*>> relays;
  while (true) {
    Clock::time_point now = Clock::now();
    for (std::size_t i : group.collect_exits()) {
      const ChildExit& exit = *group.children()[i].exit;
      if (stopping || (!exit.signaled && exit.value == 0)) continue;
      ending = GroupEnding{GroupEnding::Cause::child_failed, i, exit, 0};
      stop(SIGTERM, now);
    }
    if (!stopping && timeout && now >= started + *timeout) {
      ending.cause = GroupEnding::Cause::timed_out;
      stop(SIGTERM, now);
    }
    if (kill_at && !killed && now >= *kill_at) {
      group.signal(SIGKILL);
      killed = true;
    }
    if (group.all_exited()) {
      if (!drain_until) {
        // Descendants the children left behind in the group die with the run.
        group.signal(SIGKILL);
        drain_until = now + kDrain;
      }
      if (!group.output_open() || now >= *drain_until) break;
    }

    Clock::time_point wake = now + kTick;
    if (!stopping && timeout) wake = std::min(wake, started + *timeout);
    if (kill_at && !killed) wake = std::min(wake, *kill_at);
    if (drain_until) wake = std::min(wake, *drain_until);

    polled.assign(1, pollfd{signals.fd(), POLLIN, 0});
    relays.clear();
    for (Child& child : group.children()) {
      for (Relay* relay : {&child.stdout_relay, &child.stderr_relay}) {
        if (!relay->open()) continue;
        polled.push_back(pollfd{relay->pipe.get(), POLLIN, 0});
        relays.emplace_back(relay, &child.prefix);
      }
    }
    if (::poll(polled.data(), polled.size(), milliseconds_until(wake, now)) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }
    if (polled[0].revents)
      for (int sig : signals.take()) {
        if (!stopping) ending = GroupEnding{GroupEnding::Cause::interrupted, 0, {}, sig};
        stop(sig, Clock::now());
      }
    for (std::size_t i = 1; i < polled.size(); ++i)
      if (polled[i].revents) relays[i - 1].first->pump(*relays[i - 1].second);
  }
  group.reap();
  return ending;
}

}  // namespace rankmesh::tool
