#include "inproc/inproc_channel.hpp"

#include <cstring>
#include <memory>
#include <utility>

#include "received_payloads.hpp"

namespace rankmesh {
namespace {

constexpr std::size_t kDescriptorBytes = 2;  // dtype and rank; the dimensions follow

}  // namespace

InprocChannel::InprocChannel(Allocator allocate)
    : Channel(kTraits),
      allocate_(allocate ? std::move(allocate)
                         : Allocator([](const Shape& shape, DType dtype) {
                             return Tensor::empty(shape, dtype);
                           })) {}

bool InprocChannel::write_inline(Frame& frame, Slot& slot) noexcept {
  if (frame.dict || frame.loan || !frame.chunked.empty()) return false;
  std::size_t size = frame.metadata.size();
  for (const Tensor& t : frame.tensors) {
    if (!t.defined() || !host_bytes_ready(t)) return false;
    size += kDescriptorBytes + sizeof(std::int64_t) * t.shape().rank() + t.nbytes();
  }
  if (size > sizeof slot.bytes) return false;
  std::uint8_t* out = slot.bytes;
  if (!frame.metadata.empty())  // an empty vector's data() may be null, which memcpy must not get
    std::memcpy(out, frame.metadata.data(), frame.metadata.size());
  out += frame.metadata.size();
  for (const Tensor& t : frame.tensors) {
    *out++ = static_cast<std::uint8_t>(t.dtype());
    *out++ = static_cast<std::uint8_t>(t.shape().rank());
    for (int d = 0; d < t.shape().rank(); ++d) {
      const std::int64_t dim = t.shape()[d];
      std::memcpy(out, &dim, sizeof dim);
      out += sizeof dim;
    }
  }
  for (const Tensor& t : frame.tensors) {
    if (t.nbytes() != 0) std::memcpy(out, t.data(), t.nbytes());
    out += t.nbytes();
  }
  slot.size = static_cast<std::uint32_t>(size);
  slot.metadata_bytes = static_cast<std::uint32_t>(frame.metadata.size());
  slot.tensors = static_cast<std::uint32_t>(frame.tensors.size());
  frame.tensors.clear();  // the caller's references end here, as a swap would have ended them
  return true;
}

void InprocChannel::read_inline(const Slot& slot, Frame& frame) {
  frame.tensors.clear();
  frame.dict.reset();
  frame.loan.reset();
  frame.metadata.assign(slot.bytes, slot.bytes + slot.metadata_bytes);
  if (slot.tensors == 0) return;
  const std::uint8_t* in = slot.bytes + slot.metadata_bytes;
  described_.resize(slot.tensors);
  for (TensorDescriptor& desc : described_) {
    desc.dtype = static_cast<DType>(*in++);
    const int rank = *in++;  // the producer's tensor's: within Shape::kMaxRank
    desc.shape = Shape();
    for (int d = 0; d < rank; ++d) {
      std::int64_t dim;
      std::memcpy(&dim, in, sizeof dim);
      in += sizeof dim;
      desc.shape.push_back(dim);
    }
    desc.nbytes = static_cast<std::uint64_t>(desc.shape.numel()) * dtype_size(desc.dtype);
  }
  allocate_received_payloads(slot.header, described_, nullptr, allocate_, frame.tensors);
  for (const Tensor& t : frame.tensors) {
    if (t.nbytes() != 0) std::memcpy(t.data(), in, t.nbytes());
    in += t.nbytes();
  }
}

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

  Slot& slot = slots_[tail % kSlots];
  std::construct_at(&slot.header, frame.header);  // begins the union member's life
  if (!write_inline(frame, slot)) {
    if (!whole_) whole_ = std::make_unique<std::array<Frame, kSlots>>();  // may throw: nothing sent
    slot.size = kWhole;
    Frame& whole = (*whole_)[tail % kSlots];
    whole.metadata.swap(frame.metadata);
    whole.tensors.swap(frame.tensors);
    whole.dict.swap(frame.dict);
    whole.loan.swap(frame.loan);
    frame.tensors.clear();  // drops references the consumer handed back in this slot
  }
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

  const Slot& slot = slots_[head % kSlots];
  frame.header = slot.header;
  if (slot.size != kWhole) {
    read_inline(slot, frame);
  } else {
    Frame& whole = (*whole_)[head % kSlots];
    frame.metadata.swap(whole.metadata);
    frame.tensors.swap(whole.tensors);
    frame.dict.swap(whole.dict);
    frame.loan.swap(whole.loan);
    whole.tensors.clear();
    whole.dict.reset();
    whole.loan.reset();
  }
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
