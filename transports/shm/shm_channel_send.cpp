// ShmChannel's sending side: frames into the ring, large payloads lent by address.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "frame_codec.hpp"
#include "parker.hpp"
#include "rankmesh/error.hpp"
#include "shm/shm_channel.hpp"
#include "shm/shm_channel_layout.hpp"

namespace rankmesh {
namespace {

using shm::at;
using shm::kCmaWorks;

}  // namespace

// Whether `bytes` fit the ring's free room now: first by the head last read, then by the
// receiver's (seen_head_).
bool ShmChannel::room_for(std::size_t bytes) {
  if (fits_after(seen_head_, bytes)) return true;
  refresh_head();
  return fits_after(seen_head_, bytes);
}

// A wait's condition: room for `bytes`, or a head that refresh_head() will refuse (beyond what
// was sent: unchecked, a head near 2^64 would wrap the sum and hold the wait to its deadline).
bool ShmChannel::head_frees(std::size_t bytes) const noexcept {
  const std::uint64_t head = raw_head();
  return head > published_tail_ || fits_after(head, bytes);
}

void ShmChannel::wait_space(std::size_t bytes, Deadline deadline, const char* what) {
  if (room_for(bytes)) return;
  auto room = [&] { return closed() || head_frees(bytes); };
  if (!wait(room, &control_->space_epoch, &control_->space_sleepers, deadline)) {
    throw ChannelTimeout("shm channel to " + who() + ": the ring stayed full until the deadline (" +
                         what + ")");
  }
  if (closed()) throw_closed();
  refresh_head();
}

// Doubles the ring, up to the segment, while `bytes` do not fit what is free now. It changes only
// once the receiver has taken everything, so that both sides read every byte at the same size.
void ShmChannel::grow_for(std::size_t bytes, Deadline deadline) {
  if (ring_bytes_ >= ring_capacity_ || room_for(bytes)) return;
  std::size_t size = ring_bytes_ * 2;
  while (size < bytes && size < ring_capacity_) size *= 2;
  size = std::min(size, ring_capacity_);
  publish_tail();
  auto drained = [&] { return closed() || raw_head() >= tail_; };
  if (!wait(drained, &control_->space_epoch, &control_->space_sleepers, deadline))
    throw ChannelTimeout("shm channel to " + who() +
                         ": the ring stayed full until the deadline (waiting to grow it)");
  if (closed()) throw_closed();
  refresh_head();
  ring_bytes_ = size;
  at(control_->ring_in_use).store(size, std::memory_order_seq_cst);
}

// Whether a record of `record` bytes can be written now without waiting for the receiver: it
// fits the free room, or the ring is empty and may grow to hold it.
bool ShmChannel::fits_at_once(std::size_t record) {
  if (room_for(record)) return true;  // else seen_head_ is the receiver's head now
  return seen_head_ == tail_ && record <= ring_capacity_;
}

// Replaces the payloads that send() must copy but that do not go inline by copies of ours, to
// be lent; false when there are none.
bool ShmChannel::copy_to_lend(Frame& frame) {
  bool copied = false;
  for (Tensor& tensor : frame.tensors) {
    const std::size_t bytes = tensor.nbytes();
    if (bytes <= options_.inline_threshold || bytes > options_.copy_threshold) continue;
    Tensor copy = options_.allocator(tensor.shape(), tensor.dtype());
    std::memcpy(copy.data(), tensor.data(), bytes);
    tensor = std::move(copy);
    copied = true;
  }
  return copied;
}

void ShmChannel::stream_out(const std::uint8_t* src, std::size_t n, Deadline deadline) {
  const std::size_t chunk = shm::stream_chunk(ring_bytes_);
  while (n > 0) {
    std::size_t space = ring_bytes_ - static_cast<std::size_t>(tail_ - seen_head_);
    if (space < std::min(n, chunk)) {
      refresh_head();
      space = ring_bytes_ - static_cast<std::size_t>(tail_ - seen_head_);
    }
    if (space < std::min(n, chunk)) {
      publish_tail();
      const std::size_t want = std::min(n, chunk);
      auto room = [&] { return closed() || head_frees(want); };
      if (!wait(room, &control_->space_epoch, &control_->space_sleepers, deadline)) {
        // Part of the frame is in the ring: the link cannot carry another one.
        const std::string why = "shm channel to " + who() +
                                ": the receiver stopped taking a frame halfway until the deadline";
        close(why);
        throw ChannelTimeout(why);
      }
      if (closed()) throw_closed();
      refresh_head();
      continue;
    }
    const std::size_t k = std::min({space, n, chunk});  // the receiver copies out meanwhile
    write_ring(tail_, src, k);
    tail_ += k;
    src += k;
    n -= k;
    if (tail_ - published_tail_ >= chunk) publish_tail();
  }
}

// Gives each borrowed payload that will be lent memory of ours, filled only once the frame is
// out (make_lent_ready); the caller's tensors wait in borrowed_ (empty between sends, however
// they end). A stale index only costs a copy.
void ShmChannel::take_borrowed(Frame& frame, std::size_t lend_above) {
  try {
    frame.for_each_borrowed([&](std::size_t index) {
      Tensor& tensor = frame.tensors[index];
      if (tensor.nbytes() <= lend_above) return;  // inline: in the ring before send() returns
      Tensor own = options_.allocator(tensor.shape(), tensor.dtype());
      borrowed_.push_back(Borrowed{index, std::exchange(tensor, std::move(own))});
    });
  } catch (...) {
    give_back_borrowed(frame);
    throw;
  }
}

// Puts the caller's tensors back where a send that did not go out had taken them.
void ShmChannel::give_back_borrowed(Frame& frame) noexcept {
  for (Borrowed& taken : borrowed_) frame.tensors[taken.index] = std::move(taken.source);
  borrowed_.clear();
}

// Advances lent_ready over the frame's lent payloads from tensor `from` on, in order. A borrowed
// one is copied a part at a time, each part published (and the receiver woken) as it is done
// (`copy`); without `copy` the walk stops at the first borrowed one and wakes nobody: the
// frame's tail, published after, does. Returns the tensor index where it stopped.
std::size_t ShmChannel::make_lent_ready(Frame& frame, std::size_t from, bool copy) noexcept {
  constexpr std::size_t kPart = std::size_t{1} << 18;  // 256 KiB: measured best of 128 KiB-4 MiB
  const std::uint64_t before = lent_ready_;
  auto next = std::find_if(borrowed_.begin(), borrowed_.end(),
                           [&](const Borrowed& b) { return b.index >= from; });
  std::size_t i = from;
  for (; i < frame.tensors.size(); ++i) {
    if (!encoder_.lent(i)) continue;
    while (next != borrowed_.end() && next->index < i) ++next;  // every borrowed one is lent
    const std::size_t bytes = frame.tensors[i].nbytes();
    if (next == borrowed_.end() || next->index != i) {
      lent_ready_ += bytes;
      continue;
    }
    if (!copy) break;
    const auto* src = static_cast<const std::uint8_t*>(next->source.data());
    auto* dst = static_cast<std::uint8_t*>(frame.tensors[i].data());
    for (std::size_t done = 0; done < bytes;) {
      const std::size_t k = std::min(kPart, bytes - done);
      std::memcpy(dst + done, src + done, k);
      done += k;
      lent_ready_ += k;
      publish_lent_ready(true);
    }
    ++next;
  }
  if (lent_ready_ != before) publish_lent_ready(copy);
  return i;
}

void ShmChannel::publish_lent_ready(bool wake) noexcept {
  at(control_->lent_ready).store(lent_ready_, std::memory_order_seq_cst);
  if (wake) shm::notify(control_->data_epoch, control_->data_sleepers);
}

void ShmChannel::send(Frame& frame, Deadline start_by, Deadline deadline) {
  if (receiver_)
    throw Error(Errc::invalid_argument, "send on the receiving end of shm channel " + name_);
  if (broken_ || closed()) throw_closed();
  check_peer(false);
  shm::note_cpu(control_->sender_cpu);

  auto to = [&] { return "shm channel to " + who(); };
  check_frame_limits(frame, options_.limits);
  // Payloads above copied_up_to are lent (read by the receiver from our memory) where it may;
  // the medium ones, which we copy, go inline if the frame fits the ring at once.
  const bool one_copy = options_.single_copy &&
                        at(control_->cma_state).load(std::memory_order_acquire) == kCmaWorks;
  const std::size_t lend_above = one_copy ? copied_up_to(options_) : FrameEncoder::kNeverLend;
  if (!frame.borrowed.empty()) take_borrowed(frame, lend_above);
  std::span<const iovec> spans;
  std::size_t prefix = 0;
  std::size_t lent = 0;
  std::uint64_t record = 0;
  try {
    spans = encoder_.encode(frame, link_seq_, lend_above);
    prefix = encoder_.prefix_bytes();
    if (prefix > ring_capacity_)
      throw Error(Errc::limit_exceeded,
                  to() + ": the frame's header, descriptors and metadata (" +
                      std::to_string(prefix) + " bytes) do not fit the ring of " +
                      std::to_string(ring_capacity_) + " bytes");

    // The bytes must be final before anyone reads them.
    wait_payloads_ready(frame, start_by);

    release_consumed();
    if (one_copy && !fits_at_once(encoder_.size()) && copy_to_lend(frame))
      spans = encoder_.encode(frame, link_seq_, options_.inline_threshold);
    lent = encoder_.lent_bytes();
    if (lent > 0 && !lent_.empty()) {
      // Wait until enough of what we lent before has been read.
      std::size_t drop = 0;
      std::size_t bytes = lent_bytes_;
      while (drop < lent_.size() && (lent_.size() - drop >= options_.max_pending_frames ||
                                     bytes + lent > options_.max_pending_bytes)) {
        bytes -= lent_[drop].bytes;
        ++drop;
      }
      if (drop > 0) {
        const std::uint64_t needed = lent_[drop - 1].end;
        auto taken = [&] { return closed() || raw_head() >= needed; };
        if (!wait(taken, &control_->space_epoch, &control_->space_sleepers, start_by))
          throw ChannelTimeout(to() +
                               ": the receiver did not take earlier payloads before the deadline");
        if (closed()) throw_closed();
        release_consumed();
      }
    }

    record = encoder_.size();
    grow_for(static_cast<std::size_t>(std::min<std::uint64_t>(record, ring_capacity_)), start_by);
    if (record <= ring_bytes_) {
      wait_space(static_cast<std::size_t>(record), start_by, "waiting for room for a frame");
    } else {
      wait_space(prefix, start_by, "waiting for room for a frame's header");
    }
  } catch (...) {
    // Nothing went out: the frame is the caller's as it came (it may be sent again).
    give_back_borrowed(frame);
    throw;
  }
  // Everything below writes the frame; only a receiver that stops for good interrupts it. The
  // prefix (header, descriptors, metadata) goes in at once, the payloads may stream. The lent
  // payloads before the first borrowed one are readable with the frame. A frame that streams
  // waits for the receiver to take its inline payloads, which it reads in order: a borrowed one
  // before them must be copied first, or each side would wait for the other.
  const bool streams = record > ring_bytes_;
  const std::size_t first_borrowed = lent > 0 ? make_lent_ready(frame, 0, streams) : 0;
  std::size_t unwritten_prefix = prefix;
  try {
    for (const iovec& span : spans) {
      const auto* bytes = static_cast<const std::uint8_t*>(span.iov_base);
      const std::size_t at_once = std::min(unwritten_prefix, span.iov_len);
      write_ring(tail_, bytes, at_once);
      tail_ += at_once;
      unwritten_prefix -= at_once;
      if (at_once == span.iov_len) continue;
      if (streams) publish_tail();  // the receiver may start while we stream the rest
      stream_out(bytes + at_once, span.iov_len - at_once, deadline);
    }
  } catch (...) {
    borrowed_.clear();  // the channel is closed: this frame will never be read
    throw;
  }
  publish_tail();
  ++link_seq_;
  // The receiver reads the borrowed payloads while we copy them.
  if (!borrowed_.empty()) {
    if (!streams) make_lent_ready(frame, first_borrowed, true);
    borrowed_.clear();
  }

  if (lent > 0) {
    Pending pending{tail_, lent, {}};
    for (std::size_t i = 0; i < frame.tensors.size(); ++i)
      if (encoder_.lent(i)) pending.tensors.push_back(std::move(frame.tensors[i]));
    lent_.push_back(std::move(pending));
    lent_bytes_ += lent;
  }
  frame.clear_payloads();
  frame.metadata.clear();
}

bool ShmChannel::flush(Deadline deadline) {
  if (receiver_)
    throw Error(Errc::invalid_argument, "flush on the receiving end of shm channel " + name_);
  if (closed()) throw_closed();
  auto taken = [&] { return closed() || raw_head() >= tail_; };
  if (!wait(taken, &control_->space_epoch, &control_->space_sleepers, deadline)) return false;
  if (raw_head() < tail_) throw_closed();
  refresh_head();  // checks the receiver's head (send() reads it only when it needs room)
  release_consumed();
  return true;
}

void ShmChannel::release_consumed() {
  if (lent_.empty()) return;  // nothing waits for the head: it is read when room runs out
  refresh_head();
  while (!lent_.empty() && lent_.front().end <= seen_head_) {
    lent_bytes_ -= lent_.front().bytes;
    lent_.pop_front();
  }
}

}  // namespace rankmesh
