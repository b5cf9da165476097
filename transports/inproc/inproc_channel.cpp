#include "inproc/inproc_channel.hpp"

#include <utility>

namespace rankmesh {

void InprocChannel::send(Frame& frame, Deadline start_by, Deadline /*deadline*/) {
  const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  note_cpu(producer_cpu_);
  auto has_room = [&] {
    seen_head_ = head_.load(std::memory_order_seq_cst);
    return closed_.load(std::memory_order_acquire) || tail - seen_head_ < kSlots;
  };
  if (tail - seen_head_ >= kSlots &&
      !not_full_.wait_until(has_room, start_by,
                            [this] { return peer_runs_here(producer_cpu_, consumer_cpu_); }))
    throw ChannelTimeout("inproc channel stayed full until the deadline");
  if (closed_.load(std::memory_order_acquire)) throw_closed();

  Frame& slot = slots_[tail % kSlots];
  slot.header = frame.header;
  slot.metadata.swap(frame.metadata);
  slot.tensors.swap(frame.tensors);
  slot.dict.swap(frame.dict);
  slot.loan.swap(frame.loan);
  frame.tensors.clear();  // drops references the consumer handed back in this slot
  // Release stores: the notify right after fences (parker.hpp's protocol).
  tail_.store(tail + 1, std::memory_order_release);
  not_empty_.notify();
}

bool InprocChannel::recv(Frame& frame, Deadline deadline) {
  const std::uint64_t head = head_.load(std::memory_order_relaxed);
  note_cpu(consumer_cpu_);
  auto has_frame = [&] {
    return tail_.load(std::memory_order_seq_cst) != head || closed_.load(std::memory_order_acquire);
  };
  if (!not_empty_.wait_until(has_frame, deadline,
                             [this] { return peer_runs_here(consumer_cpu_, producer_cpu_); }))
    return false;
  if (tail_.load(std::memory_order_acquire) == head) throw_closed();

  Frame& slot = slots_[head % kSlots];
  frame.header = slot.header;
  frame.metadata.swap(slot.metadata);
  frame.tensors.swap(slot.tensors);
  frame.dict.swap(slot.dict);
  frame.loan.swap(slot.loan);
  slot.tensors.clear();
  slot.dict.reset();
  slot.loan.reset();
  head_.store(head + 1, std::memory_order_release);
  not_full_.notify();
  return true;
}

void InprocChannel::close(const std::string& reason) {
  {
    std::lock_guard lock(reason_mutex_);
    if (closed_.load(std::memory_order_relaxed)) return;
    reason_ = reason;
  }
  closed_.store(true, std::memory_order_seq_cst);
  not_empty_.notify();
  not_full_.notify();
}

void InprocChannel::throw_closed() const {
  std::lock_guard lock(reason_mutex_);
  throw ChannelClosed(reason_);
}

}  // namespace rankmesh
