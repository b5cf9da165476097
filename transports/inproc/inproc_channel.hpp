// The inproc transport: a bounded single-producer single-consumer ring of frames between two
// ranks of one process. Tensors change hands as shared references, so a donated payload is never
// copied (whether to copy one that is not donated is the sender's decision, made above).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "channel.hpp"
#include "parker.hpp"

namespace rankmesh {

class InprocChannel final : public Channel {
public:
  static constexpr std::size_t kSlots = 64;

  static constexpr ChannelTraits kTraits{
      .shares_tensors = true, .carries_device_memory = true, .transport = "inproc"};

  InprocChannel() : Channel(kTraits) {}

  using Channel::send;
  // A frame goes into a slot whole: only `start_by` bounds the wait.
  void send(Frame& frame, Deadline start_by, Deadline deadline) override;
  bool recv(Frame& frame, Deadline deadline) override;
  void close(const std::string& reason) override;

private:
  [[noreturn]] void throw_closed() const;

  std::array<Frame, kSlots> slots_;
  // head_: next slot the consumer reads; tail_: next slot the producer writes. Each is written
  // by one side only; they sit on their own cache lines so the sides do not false-share. Beside
  // each, where its side last ran: a spinning waiter offers its core (parker.hpp) only to a
  // peer that last ran on it — offered every 64 polls, a sched_yield whose system call costs
  // microseconds in a paravirtualized guest delayed every message the waiter was spinning for.
  alignas(64) std::atomic<std::uint64_t> head_{0};
  std::atomic<std::uint32_t> consumer_cpu_{0};  // where the consumer last ran (note_cpu)
  alignas(64) std::atomic<std::uint64_t> tail_{0};
  std::atomic<std::uint32_t> producer_cpu_{0};  // where the producer last ran
  // The producer's copy of head_, read again only when it says the ring is full: reading head_
  // on every send took its line from the consumer's core each message, and the consumer's next
  // store to it waited for the line to come back.
  std::uint64_t seen_head_ = 0;
  alignas(64) std::atomic<bool> closed_{false};
  Parker not_empty_;
  Parker not_full_;
  mutable std::mutex reason_mutex_;  // close() is rare; the reason is read only after closed_
  std::string reason_;
};

}  // namespace rankmesh
