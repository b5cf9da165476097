// OpHistory: the last messages of one rank, kept so that a hang or a lost peer can be
// diagnosed from the log: an error a rank reports goes out with them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "rankmesh/error.hpp"

namespace rankmesh {

class OpHistory {
public:
  using Log = std::function<void(const std::string&)>;
  // A group's name as the history keeps it (cut to 15 characters), made once per group so
  // that recording a message copies 16 bytes rather than a string.
  using GroupLabel = std::array<char, 16>;
  static GroupLabel label_of(const std::string& group) noexcept;
  OpHistory(int rank, Log log) : rank_(rank), log_(std::move(log)) {}

  // One message of an operation (by the thread running the rank's operations; no allocation).
  void record(std::uint32_t op, const GroupLabel& group, int peer, bool sent, std::uint64_t seq,
              std::size_t bytes) noexcept;
  // A line for the operator (the runtime's log).
  void log(const std::string& line) const {
    if (log_) log_(line);
  }
  const Log& logger() const noexcept { return log_; }
  // The newest message this rank received from global rank `peer` still in the history
  // ("all_reduce #16 on tp:0"), or "" when none is.
  std::string last_from(int peer) const;
  // Logs `error` with the recent messages of this rank, and returns it for throwing.
  Error reported(Error error) const;
  // Sees every error reported (the rank's tracer marks them on its timeline). Set once, before
  // the rank runs operations.
  void observe(std::function<void(const Error&)> observer) { observer_ = std::move(observer); }

private:
  struct Entry {
    std::uint32_t op = 0;
    GroupLabel group{};
    int peer = -1;  // global rank
    bool sent = false;
    std::uint64_t seq = 0;
    std::size_t bytes = 0;
  };
  static constexpr std::size_t kEntries = 16;

  const int rank_;
  const Log log_;
  std::function<void(const Error&)> observer_;
  std::array<Entry, kEntries> entries_{};
  std::uint64_t recorded_ = 0;
};

}  // namespace rankmesh
