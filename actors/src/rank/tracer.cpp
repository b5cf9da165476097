#include "rank/tracer.hpp"

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>
#include <unistd.h>
#include <vector>

#include "rankmesh/error.hpp"

namespace rankmesh {

void Tracer::configure(std::string directory, std::size_t capacity, std::string host, bool on) {
  {
    std::lock_guard lock(mutex_);
    directory_ = std::move(directory);
    capacity_ = std::max<std::size_t>(1, capacity);
    host_ = std::move(host);
  }
  set_on(on);
}

void Tracer::set_on(bool on) {
  std::lock_guard lock(mutex_);
  if (on && !ring_) ring_ = std::make_unique<TraceRing>(capacity_);
  on_.store(on, std::memory_order_release);
}

void Tracer::record(const TraceEvent& event) noexcept {
  // The ring exists once recording has started; it is never destroyed before the tracer.
  if (TraceRing* ring = ring_.get()) ring->push(event);
}

namespace {
thread_local TraceEvent t_last_failure;  // only its message is used
}  // namespace

const char* Tracer::last_failure() noexcept { return t_last_failure.message; }

void Tracer::instant(const char* name, const std::string& group, const std::string& message) noexcept {
  if (!on()) return;
  t_last_failure.set_message(message);
  TraceEvent event;
  event.kind = TraceEvent::Kind::instant;
  event.name = name;
  event.start_ns = event.end_ns = now_ns();
  event.set_group(group);
  event.set_message(message);
  record(event);
}

std::string Tracer::write_file(const std::string& path, const char* reason) {
  TraceFileInfo info;
  info.rank = rank_;
  info.world_size = world_size_;
  info.host = host_;
  info.reason = reason;
  const ClockOffset::Estimate clock = clock_.estimate();
  info.clock_offset_us = clock.offset_us;
  info.clock_error_us = clock.error_us;
  info.clock_method = clock.method;
  const TraceRing::Snapshot snapshot = ring_ ? ring_->snapshot() : TraceRing::Snapshot{};
  // Written beside and renamed: a reader never sees half a file.
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial, std::ios::trunc);
    write_chrome_trace(out, info, snapshot);
    if (!out.flush())
      throw Error(Errc::invalid_config, "trace: cannot write " + partial);
  }
  std::error_code error;
  std::filesystem::rename(partial, path, error);
  if (error) {
    std::filesystem::remove(partial, error);
    throw Error(Errc::invalid_config, "trace: cannot write " + path);
  }
  return path;
}

void Tracer::make_directory() const {
  if (directory_.empty())
    throw Error(Errc::invalid_argument,
                "trace: no directory to write to (set RANKMESH_TRACE or RuntimeOptions::trace_dir)");
  std::error_code error;
  std::filesystem::create_directories(directory_, error);
  if (error)
    throw Error(Errc::invalid_config, "trace: cannot make directory " + directory_ + ": " + error.message());
}

std::string Tracer::write(const char* reason) {
  std::lock_guard lock(mutex_);
  make_directory();
  return write_file(directory_ + "/rank-" + std::to_string(rank_) + ".trace.json", reason);
}

bool Tracer::keep(const char* reason) noexcept {
  {
    std::lock_guard lock(mutex_);
    if (directory_.empty() || !ring_) return false;
  }
  try {
    write(reason);
    return true;
  } catch (...) {
    return false;
  }
}

void Tracer::mark_failure(const char* name, const std::string& reason) noexcept {
  instant(name, "", reason);
  keep("failure");
}

std::string Tracer::dump(const char* reason) {
  std::lock_guard lock(mutex_);
  make_directory();
  auto name = [&](int k) {
    return directory_ + "/rank-" + std::to_string(rank_) + ".dump-" + std::to_string(k) +
           ".trace.json";
  };
  const int k = next_dump_++;
  std::error_code ignored;
  if (k >= kDumps) std::filesystem::remove(name(k - kDumps), ignored);
  return write_file(name(k), reason);
}

namespace {

struct DumpSignal {
  std::mutex mutex;
  std::vector<std::weak_ptr<Tracer>> tracers;
  int pipe_write = -1;
};

DumpSignal& dump_signal() {
  static auto* state = new DumpSignal;  // never destroyed: the signal thread outlives main
  return *state;
}

// Async-signal-safe: one byte into the pipe wakes the dumping thread. The handler the process
// had before (an engine's own) runs after it: tracing adds to SIGUSR2, it does not take it over.
int g_pipe_write = -1;
struct sigaction g_previous {};
void on_dump_signal(int signal, siginfo_t* info, void* context) {
  const int saved = errno;
  const char byte = 1;
  [[maybe_unused]] const ssize_t n = ::write(g_pipe_write, &byte, 1);
  errno = saved;
  if ((g_previous.sa_flags & SA_SIGINFO) != 0) {
    if (g_previous.sa_sigaction != nullptr) g_previous.sa_sigaction(signal, info, context);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(signal);
  }
}

}  // namespace

void watch_dump_signal(const std::shared_ptr<Tracer>& tracer) {
  DumpSignal& state = dump_signal();
  std::lock_guard lock(state.mutex);
  std::erase_if(state.tracers, [](const std::weak_ptr<Tracer>& t) { return t.expired(); });
  state.tracers.push_back(tracer);
  if (state.pipe_write >= 0) return;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return;  // no dumps on signal; files on shutdown still work
  state.pipe_write = g_pipe_write = fds[1];
  std::thread([read_end = fds[0]] {
    char byte;
    while (::read(read_end, &byte, 1) >= 0 || errno == EINTR) {
      std::vector<std::shared_ptr<Tracer>> alive;
      {
        DumpSignal& s = dump_signal();
        std::lock_guard guard(s.mutex);
        for (const auto& weak : s.tracers)
          if (auto t = weak.lock()) alive.push_back(std::move(t));
      }
      for (const auto& t : alive) {
        try {
          t->dump("signal");
        } catch (const Error&) {
          // A tracer without a directory has nothing to dump to.
        }
      }
    }
  }).detach();
  struct sigaction action {};
  action.sa_sigaction = on_dump_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART | SA_SIGINFO;
  ::sigaction(SIGUSR2, &action, &g_previous);
}

}  // namespace rankmesh
