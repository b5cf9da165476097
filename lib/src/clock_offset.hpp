// ClockOffset: this rank's clock against rank 0's, for its trace files (issue 13: timestamps of
// different processes and hosts line up). Ranks on rank 0's host share its CLOCK_MONOTONIC: the
// offset is 0, exactly. A rank on another host estimates it from ping-pongs with rank 0: its
// heartbeats, which rank 0's registry answers with its own clock. A heartbeat sent at t1 and
// answered at t2 (this rank's clock) carrying rank 0's time r puts the offset at
// r - (t1 + t2) / 2, within (t2 - t1) / 2 whatever the two legs took; the sample with the
// smallest round trip among the last kWindow wins, so the estimate follows drift as heartbeats
// go on (one per failure timeout / 4: every 0.5 s by default, a window of 32 s).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

namespace rankmesh {

class ClockOffset {
public:
  // This process's CLOCK_MONOTONIC (std::chrono::steady_clock) in ns: what trace events carry.
  static std::int64_t now_ns() noexcept;

  // Whether this rank shares rank 0's clock (the same host); true until told otherwise.
  void set_shares_rank0_clock(bool shares) noexcept;
  // One heartbeat: sent at `sent_ns`, answered at `received_ns` (this clock) with rank 0's
  // `rank0_ns`. Samples that cannot be one (received before sent, a negative time) are ignored.
  // Thread-safe.
  void sample(std::int64_t sent_ns, std::int64_t rank0_ns, std::int64_t received_ns) noexcept;

  struct Estimate {
    double offset_us = 0;  // add to this rank's times to get rank 0's
    double error_us = 0;   // the offset is within +- this
    std::string method = "same host";  // or "ping-pong", or "none yet" (another host, no sample)
  };
  Estimate estimate() const;

  static constexpr std::size_t kWindow = 64;

private:
  struct Sample {
    std::int64_t round_trip_ns = -1;  // -1: empty
    std::int64_t offset_ns = 0;
  };
  mutable std::mutex mutex_;
  bool shares_ = true;
  std::array<Sample, kWindow> samples_{};
  std::size_t next_ = 0;
};

}  // namespace rankmesh
