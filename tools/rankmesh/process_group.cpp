#include "process_group.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <climits>
#include <cstring>
#include <string_view>
#include <system_error>
#include <utility>

#include "supervisor.hpp"

namespace rankmesh::tool {
namespace {

using Clock = std::chrono::steady_clock;

// A line longer than this is relayed in pieces, so that a child that never writes a newline
// cannot grow the launcher without bound.
constexpr std::size_t kMaxLine = 64 * 1024;
// Once every child has exited, output still in the pipes is read for at most this long: a
// process that escaped its rank's tree could otherwise hold a pipe open forever. After a signal
// or the timeout it also bounds how long output already read waits for a stalled reader.
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

// Output waiting for one of the launcher's own streams. It is written only when poll() says the
// stream takes more, at most PIPE_BUF bytes at a time (a pipe with room for one more write
// takes that much without blocking), so that a reader that stops reading never blocks the loop
// that watches the ranks, the signals and the timeout.
class Outlet {
public:
  explicit Outlet(int fd) : fd_(fd) {}

  int fd() const { return fd_; }
  bool empty() const { return offset_ == pending_.size(); }
  // So much is waiting that the children's pipes are not read until the reader catches up:
  // a rank that writes faster than our reader reads then waits in its write().
  bool full() const { return pending_.size() - offset_ >= kMaxPending; }

  void add(std::string_view text) {
    if (!broken_) pending_.append(text);
  }

  // Writes what the stream takes now. A stream that fails (its reader closed it while we
  // ignore SIGPIPE, or it was never open) takes nothing more: the run goes on without it.
  void write_available() {
    while (!empty()) {
      std::size_t chunk = std::min<std::size_t>(pending_.size() - offset_, PIPE_BUF);
      ssize_t n = ::write(fd_, pending_.data() + offset_, chunk);
      if (n > 0) {
        offset_ += static_cast<std::size_t>(n);
        pollfd writable{fd_, POLLOUT, 0};
        if (::poll(&writable, 1, 0) != 1 || !(writable.revents & POLLOUT)) break;
      } else if (n < 0 && errno == EAGAIN) {
        break;  // a non-blocking stream our caller handed us: its next POLLOUT brings us back
      } else if (n < 0 && errno != EINTR) {
        broken_ = true;
        offset_ = pending_.size();
      }
    }
    if (offset_ >= pending_.size() / 2) {
      pending_.erase(0, offset_);
      offset_ = 0;
    }
  }

  // Drops what the reader has not taken: the run is over and the reader stalled.
  void abandon() { offset_ = pending_.size(); }

private:
  static constexpr std::size_t kMaxPending = 1024 * 1024;
  int fd_;
  std::string pending_;
  std::size_t offset_ = 0;
  bool broken_ = false;
};

// One output stream of a child, relayed to an outlet line by line behind the child's prefix.
struct Relay {
  Fd pipe;  // read end, closed at end of file
  Outlet* out = nullptr;
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
    std::size_t start = 0;
    for (std::size_t newline; (newline = partial.find('\n', start)) != std::string::npos; start = newline + 1) {
      out->add(prefix);
      out->add(std::string_view(partial).substr(start, newline + 1 - start));
    }
    partial.erase(0, start);
    if (partial.size() >= kMaxLine) {
      out->add(prefix);
      out->add(partial);
      out->add("\n");
      partial.clear();
    }
  }

  // Queues an unterminated last line as a whole one and closes the pipe.
  void finish(const std::string& prefix) {
    if (!partial.empty()) {
      out->add(prefix);
      out->add(partial);
      out->add("\n");
    }
    partial.clear();
    pipe.reset();
  }
};

struct Child {
  pid_t pid = -1;  // the rank's supervisor
  std::string prefix;
  std::optional<ChildExit> exit;
  Relay stdout_relay;
  Relay stderr_relay;
};

// The forwarded signals and SIGCHLD arrive through a signalfd while the group runs, so that the
// loop sees them between polls instead of in a handler.
class SignalRoute {
public:
  SignalRoute() {
    // A caller that ignores SIGCHLD would have the children reaped unseen, and they would inherit
    // that through exec; both need the default.
    ::signal(SIGCHLD, SIG_DFL);
    sigemptyset(&routed_);
    for (int sig : kForwardedSignals) sigaddset(&routed_, sig);
    sigaddset(&routed_, SIGCHLD);
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
  // The mask the rank programs must start with: the one the caller had.
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

// The running children: one supervisor per rank (supervisor.hpp). They are reaped only by
// reap(), after all have exited: until then every child's pid stays theirs, so signalling by
// number cannot hit a stranger.
class Group {
public:
  ~Group() {
    // Reached with children left only when something threw: end their trees. Whatever is still
    // a zombie here is reaped by init when the launcher exits.
    if (!children_.empty()) signal(kEndTreeSignal);
  }

  std::vector<Child>& children() { return children_; }

  void spawn(const ChildSpec& spec, const sigset_t& rank_mask, int dev_null, Outlet& out, Outlet& err) {
    int out_pipe[2], err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw_errno("pipe");
    Fd out_read(out_pipe[0]), out_write(out_pipe[1]);
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw_errno("pipe");
    Fd err_read(err_pipe[0]), err_write(err_pipe[1]);

    // Everything the supervisor and the rank need is prepared before fork().
    std::vector<char*> argv, envp;
    for (const std::string& arg : spec.argv) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    for (const std::string& entry : spec.env) envp.push_back(const_cast<char*>(entry.c_str()));
    envp.push_back(nullptr);
    std::string exec_failed = "rankmesh launch: cannot execute '" + spec.argv[0] + "': ";
    const SupervisedRank rank{argv.data(), envp.data(), exec_failed.c_str(), rank_mask, ::getpid(),
                              dev_null, out_write.get(), err_write.get(), spec.handed_fd};

    // The supervisor starts with every signal blocked, so that none can end it before it has
    // routed them (a forwarded one) or set up the tree it must end (its death signal).
    sigset_t everything, current;
    sigfillset(&everything);
    ::sigprocmask(SIG_SETMASK, &everything, &current);
    pid_t pid = ::fork();
    if (pid == 0) supervise(rank);  // never returns
    int fork_error = errno;
    ::sigprocmask(SIG_SETMASK, &current, nullptr);
    if (pid > 0 && spec.handed_fd >= 0) ::close(spec.handed_fd);  // the supervisor holds it now
    if (pid < 0) {
      errno = fork_error;
      throw_errno("fork");
    }
    ::setpgid(pid, pid);

    Child& child = children_.emplace_back();
    child.pid = pid;
    child.prefix = spec.prefix;
    child.stdout_relay.pipe = std::move(out_read);
    child.stdout_relay.out = &out;
    child.stderr_relay.pipe = std::move(err_read);
    child.stderr_relay.out = &err;
  }

  // Sends `sig` to every supervisor still running: a forwarded signal reaches its rank's process
  // group, kEndTreeSignal ends its rank's tree.
  void signal(int sig) {
    for (const Child& child : children_)
      if (!child.exit) ::kill(child.pid, sig);
  }

  // Notes the children that exited since the last look and returns their indices, in order.
  std::vector<std::size_t> collect_exits() {
    std::vector<std::size_t> exited;
    for (std::size_t i = 0; i < children_.size(); ++i) {
      Child& child = children_[i];
      if (child.exit) continue;
      siginfo_t info{};
      // WNOWAIT leaves it a zombie, which keeps its pid reserved (see the class comment).
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

  // Queues what the children left unterminated and stops reading their pipes.
  void close_output() {
    for (Child& child : children_) {
      if (child.stdout_relay.open()) child.stdout_relay.finish(child.prefix);
      if (child.stderr_relay.open()) child.stderr_relay.finish(child.prefix);
    }
  }

  // Reaps the children; only once all have exited.
  void reap() {
    for (Child& child : children_) ::waitpid(child.pid, nullptr, 0);  // a zombie: returns at once
    children_.clear();
  }

private:
  std::vector<Child> children_;
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
  Outlet out(STDOUT_FILENO), err(STDERR_FILENO);
  Group group;
  // Ranks read /dev/null: they run in background process groups, where reading a terminal
  // would stop them.
  for (const ChildSpec& spec : specs) group.spawn(spec, signals.previous_mask(), dev_null.get(), out, err);

  GroupEnding ending;
  bool stopping = false;
  bool killed = false;
  // Set by a signal or the timeout: output the reader has not taken once the ranks are gone
  // (and kDrain is over) is dropped rather than waited for.
  bool output_may_be_dropped = false;
  const Clock::time_point started = Clock::now();
  std::optional<Clock::time_point> deadline;
  if (timeout) deadline = started + *timeout;
  std::optional<Clock::time_point> kill_at;      // end the trees of whoever still runs then
  std::optional<Clock::time_point> drain_until;  // set once every child has exited
  auto stop = [&](int sig, Clock::time_point now) {
    stopping = true;
    group.signal(sig);
    if (!kill_at) kill_at = now + grace;
  };

  std::vector<pollfd> polled;
  std::vector<std::pair<Relay*, const std::string*>> relays;
  std::vector<Outlet*> outlets;
  while (true) {
    Clock::time_point now = Clock::now();
    for (std::size_t i : group.collect_exits()) {
      const ChildExit& exit = *group.children()[i].exit;
      if (stopping || (!exit.signaled && exit.value == 0)) continue;
      ending = GroupEnding{GroupEnding::Cause::child_failed, i, exit, 0};
      stop(SIGTERM, now);
    }
    // The timeout bounds the whole run, relaying its output included.
    if (deadline && now >= *deadline) {
      if (!stopping) {
        ending.cause = GroupEnding::Cause::timed_out;
        stop(SIGTERM, now);
      }
      output_may_be_dropped = true;
    }
    if (kill_at && !killed && now >= *kill_at) {
      group.signal(kEndTreeSignal);
      killed = true;
    }
    if (group.all_exited()) {
      // The supervisors have ended every tree, so the pipes close at once unless something
      // escaped; their output is read for at most kDrain.
      if (!drain_until) drain_until = now + kDrain;
      const bool drain_over = now >= *drain_until;
      if (drain_over) group.close_output();
      if (drain_over && output_may_be_dropped) {
        out.abandon();
        err.abandon();
      }
      if (!group.output_open() && out.empty() && err.empty()) break;
    }

    Clock::time_point wake = now + kTick;
    if (deadline && now < *deadline) wake = std::min(wake, *deadline);
    if (kill_at && !killed) wake = std::min(wake, *kill_at);
    if (drain_until && now < *drain_until) wake = std::min(wake, *drain_until);

    polled.assign(1, pollfd{signals.fd(), POLLIN, 0});
    relays.clear();
    outlets.clear();
    for (Child& child : group.children()) {
      for (Relay* relay : {&child.stdout_relay, &child.stderr_relay}) {
        if (!relay->open() || relay->out->full()) continue;
        polled.push_back(pollfd{relay->pipe.get(), POLLIN, 0});
        relays.emplace_back(relay, &child.prefix);
      }
    }
    for (Outlet* outlet : {&out, &err}) {
      if (outlet->empty()) continue;
      polled.push_back(pollfd{outlet->fd(), POLLOUT, 0});
      outlets.push_back(outlet);
    }
    if (::poll(polled.data(), polled.size(), milliseconds_until(wake, now)) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }
    if (polled[0].revents)
      for (int sig : signals.take()) {
        if (!stopping) ending = GroupEnding{GroupEnding::Cause::interrupted, 0, {}, sig};
        output_may_be_dropped = true;
        stop(sig, Clock::now());
      }
    for (std::size_t i = 0; i < relays.size(); ++i)
      if (polled[1 + i].revents) relays[i].first->pump(*relays[i].second);
    for (std::size_t i = 0; i < outlets.size(); ++i)
      if (polled[1 + relays.size() + i].revents) outlets[i]->write_available();
  }
  group.reap();
  return ending;
}

void write_within(int fd, std::string_view text, std::chrono::milliseconds patience) {
  Outlet outlet(fd);
  outlet.add(text);
  const Clock::time_point give_up = Clock::now() + patience;
  while (!outlet.empty()) {
    Clock::time_point now = Clock::now();
    if (now >= give_up) return;
    pollfd writable{fd, POLLOUT, 0};
    int ready = ::poll(&writable, 1, milliseconds_until(give_up, now));
    if (ready < 0 && errno != EINTR) return;
    if (ready > 0) outlet.write_available();
  }
}

}  // namespace rankmesh::tool
