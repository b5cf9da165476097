// Tracer: one rank's timeline recording (issue 13). Off, it costs each operation one relaxed
// load and a predictable branch (Call checks on()). On, every operation becomes a TraceEvent in
// a bounded ring (trace_ring.hpp), written as DIR/rank-<R>.trace.json on shutdown, on failure
// and when asked (flush); dumps while the world runs go to rotating DIR/rank-<R>.dump-<K> files
// (SIGUSR2, or dump()). docs/trace.md describes the files and the tools that read them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "clock_offset.hpp"
#include "trace_ring.hpp"

namespace rankmesh {

class Tracer {
public:
  Tracer(int rank, int world_size) : rank_(rank), world_size_(world_size) {}

  // Where files go, how many operations the ring keeps, and whether recording starts now.
  // `host` names the machine in the files (ranks with the same host share one clock).
  void configure(std::string directory, std::size_t capacity, std::string host, bool on);
  // Acquire: a Call that sees recording on also sees the ring set_on() made before.
  bool on() const noexcept { return on_.load(std::memory_order_acquire); }
  // Starts or stops recording (the ring keeps what it has).
  void set_on(bool on);

  void record(const TraceEvent& event) noexcept;
  // An instant: a timeout, a lost peer, an abort, a mismatch (by the error's code). Its text
  // is also the calling thread's last failure, which the failed operation's event repeats.
  void instant(const char* name, const std::string& group, const std::string& message) noexcept;
  // The text of the last instant this thread recorded ("" if none): the failed operation's error.
  static const char* last_failure() noexcept;

  // Writes the ring to DIR/rank-<R>.trace.json (replacing it); returns the path. Throws
  // Error(invalid_argument) when no directory is configured, Error(invalid_config) when the
  // file cannot be written there.
  std::string write(const char* reason);
  // Writes the ring to the next rotating dump file, keeping the last kDumps; returns the path.
  std::string dump(const char* reason);
  // write(reason) where there is something to keep (a directory, and recording started);
  // never throws (shutdown and failure paths): false when nothing was written.
  bool keep(const char* reason) noexcept;
  // A failure of the rank (a lost peer, an abort): an instant named `name`, then keep().
  void mark_failure(const char* name, const std::string& reason) noexcept;
  static constexpr int kDumps = 8;

  static std::int64_t now_ns() noexcept { return ClockOffset::now_ns(); }
  // This rank's clock against rank 0's, written in every file (thread-safe).
  ClockOffset& clock() noexcept { return clock_; }

private:
  // Both with mutex_ held. make_directory() throws Error(invalid_argument) when none is
  // configured, Error(invalid_config) when it cannot be made.
  void make_directory() const;
  std::string write_file(const std::string& path, const char* reason);

  const int rank_;
  const int world_size_;
  std::atomic<bool> on_{false};
  mutable std::mutex mutex_;  // configuration, the ring's creation, files
  std::string directory_;
  std::string host_;
  std::size_t capacity_ = 16384;
  std::unique_ptr<TraceRing> ring_;  // made when recording first starts
  int next_dump_ = 0;
  ClockOffset clock_;
};

// SIGUSR2 makes every tracer of this process that has a directory dump its ring (rotating
// files). Installed once, by the first runtime that traces; a thread of its own does the
// writing, since a signal handler may not. The handler the process had for SIGUSR2 before (an
// engine's own) still runs on each signal, after the dump is asked for.
void watch_dump_signal(const std::shared_ptr<Tracer>& tracer);

}  // namespace rankmesh
