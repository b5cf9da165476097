#include "clock_offset.hpp"

#include <chrono>

namespace rankmesh {

std::int64_t ClockOffset::now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void ClockOffset::set_shares_rank0_clock(bool shares) noexcept {
  std::lock_guard lock(mutex_);
  shares_ = shares;
}

void ClockOffset::sample(std::int64_t sent_ns, std::int64_t rank0_ns, std::int64_t received_ns) noexcept {
  if (sent_ns < 0 || rank0_ns < 0 || received_ns < sent_ns) return;
  std::lock_guard lock(mutex_);
  // (t1 + t2) / 2 without overflow: t1 + (t2 - t1) / 2.
  samples_[next_] = Sample{received_ns - sent_ns, rank0_ns - (sent_ns + (received_ns - sent_ns) / 2)};
  next_ = (next_ + 1) % kWindow;
}

ClockOffset::Estimate ClockOffset::estimate() const {
  std::lock_guard lock(mutex_);
  Estimate estimate;
  if (shares_) return estimate;
  const Sample* best = nullptr;
  for (const Sample& s : samples_)
    if (s.round_trip_ns >= 0 && (best == nullptr || s.round_trip_ns < best->round_trip_ns)) best = &s;
  if (best == nullptr) {
    estimate.method = "none yet";
    return estimate;
  }
  estimate.offset_us = static_cast<double>(best->offset_ns) / 1e3;
  estimate.error_us = static_cast<double>(best->round_trip_ns) / 2e3;
  estimate.method = "ping-pong";
  return estimate;
}

}  // namespace rankmesh
