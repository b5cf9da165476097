// TraceRing: one rank's record of its operations for a timeline (issue 13) — a bounded ring of
// fixed-size events (the oldest dropped and counted), filled without allocating, and written
// as a Chrome trace-event file that Perfetto and chrome://tracing load (docs/trace.md has the
// format; tools/rankmesh's `trace` commands merge and read it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <ostream>
#include <string>
#include <vector>

namespace rankmesh {

struct TraceEvent {
  enum class Kind : std::uint8_t { operation, instant };
  enum class Flow : std::uint8_t { none, sent, received };
  static constexpr std::size_t kMaxPeers = 8;

  Kind kind = Kind::operation;
  std::uint8_t lane = 0;      // 0: the engine's thread; 1: the rank's stream thread
  bool collective = false;    // else point-to-point
  bool failed = false;
  const char* name = "";      // the operation or instant ("timeout"); static storage
  const char* transport = ""; // of the operation's messages: "inproc", "shm", "tcp", "mixed"
  char group[16] = {};        // "tp:0"
  std::uint32_t group_id = 0;
  std::int64_t seq = -1;      // the group's collective number, or the p2p message number
  std::uint64_t bytes = 0;    // bytes of the messages sent and received (metadata, payloads)
  std::int64_t start_ns = 0;  // CLOCK_MONOTONIC
  std::int64_t end_ns = 0;
  std::int32_t peers[kMaxPeers] = {};
  std::uint16_t peer_count = 0;  // peers exchanged with; the first kMaxPeers are listed
  // A point-to-point operation's message, for the arrow from its send to its receive: it
  // starts where the send starts and ends where the receive ends.
  Flow flow = Flow::none;
  std::int32_t flow_src = -1;  // global ranks
  std::int32_t flow_dst = -1;
  char message[160] = "";  // an instant's text, or a failed operation's error (truncated)

  void set_group(const std::string& name) noexcept;
  void set_message(const std::string& text) noexcept;
  void add_peer(int peer) noexcept;
};

// What a trace file says about the rank and its clock.
struct TraceFileInfo {
  int rank = 0;
  int world_size = 1;
  std::string host;
  double clock_offset_us = 0;  // add to this rank's times to get the world's time line
  double clock_error_us = 0;
  std::string clock_method = "same host";
  std::string reason;  // why the file was written: shutdown, failure, flush, signal, api
};

class TraceRing {
public:
  explicit TraceRing(std::size_t capacity);
  // Thread-safe (a rank's engine and stream threads both record); never allocates.
  void push(const TraceEvent& event) noexcept;
  // The events held, oldest first, and how many were recorded and dropped in all.
  struct Snapshot {
    std::vector<TraceEvent> events;
    std::uint64_t recorded = 0;
    std::uint64_t dropped = 0;
  };
  Snapshot snapshot() const;

private:
  mutable std::mutex mutex_;
  std::vector<TraceEvent> events_;
  std::uint64_t recorded_ = 0;
};

// Writes `snapshot` as one Chrome trace-event JSON object (format version 1).
void write_chrome_trace(std::ostream& out, const TraceFileInfo& info,
                        const TraceRing::Snapshot& snapshot);

// The flow id both ends of a point-to-point message compute alone.
std::string flow_id(std::uint32_t group_id, int src, int dst, std::int64_t seq);

}  // namespace rankmesh
