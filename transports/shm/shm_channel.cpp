#include "shm/shm_channel.hpp"

#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <system_error>
#include <thread>

#include "rankmesh/error.hpp"
#include "frame_codec.hpp"
#include "parker.hpp"
#include "shm/shm_channel_layout.hpp"

namespace rankmesh {
namespace {

constexpr std::uint64_t kControlMagic = 0x3142434d48534d52;  // "RMSHMCB1"
constexpr std::uint32_t kControlVersion = 5;
constexpr std::size_t kMinRing = std::size_t{64} << 10;
constexpr std::size_t kMaxRing = std::size_t{1} << 30;

using shm::at;
using shm::kCmaDenied;
using shm::kCmaUnknown;
using shm::kCmaWorks;

// The monotonic clock as of its last update (CLOCK_MONOTONIC_COARSE): behind Clock::now() by a
// few milliseconds (3-7 measured here), ~5 ns to read against ~32 for Clock::now() under
// kvm-clock. For the liveness check every send makes, a rate limit that a few ms do not change:
// two reads of Clock::now() (~64 ns) in an object round trip of ~0.75 us.
Clock::time_point coarse_now() noexcept {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  return Clock::time_point(std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec));
}

}  // namespace

ShmChannel::Created ShmChannel::create(ShmOptions options) {
  if (options.ring_bytes > kMaxRing)
    throw Error(Errc::invalid_argument, "shm ring of " + std::to_string(options.ring_bytes) +
                                            " bytes is beyond the limit of 1 GiB");
  if (options.liveness_interval <= std::chrono::nanoseconds::zero())
    throw Error(Errc::invalid_argument, "shm liveness_interval must be positive");
  const std::size_t ring = std::bit_ceil(std::max(options.ring_bytes, kMinRing));
  const std::size_t first = std::bit_ceil(std::clamp(options.initial_ring_bytes, kMinRing, ring));
  const std::size_t total = Layout::kControlBytes + ring;
  std::string name;
  int handoff = -1;
  const shm::Mapping mapping = shm::create_segment(total, name, handoff, /*populate=*/false);
  void* base = mapping.base;
  auto* control = static_cast<Control*>(base);  // the fresh segment reads as zeros
  control->version = kControlVersion;
  control->control_bytes = Layout::kControlBytes;
  control->ring_bytes = ring;
  control->ring_in_use = first;
  control->receiver_pid = getpid();
  at(control->magic).store(kControlMagic, std::memory_order_release);

  std::unique_ptr<ShmChannel> channel;
  try {
    channel = std::make_unique<ShmChannel>(Private{}, true, name, base, total, std::move(options));
  } catch (...) {
    shm::unmap(mapping);
    shm::end_handoff(handoff);
    throw;
  }
  channel->handoff_ = handoff;
  return Created{std::move(channel), name};
}

std::unique_ptr<ShmChannel> ShmChannel::open(const std::string& name, ShmOptions options) {
  if (options.liveness_interval <= std::chrono::nanoseconds::zero())
    throw Error(Errc::invalid_argument, "shm liveness_interval must be positive");
  const shm::Mapping mapping = shm::open_segment(name, Layout::kControlBytes + kMinRing,
                                                 Layout::kControlBytes + kMaxRing,
                                                 "rankmesh channel", options.peer_pid,
                                                 /*populate=*/false);
  void* base = mapping.base;
  const std::size_t total = mapping.bytes;
  auto* control = static_cast<Control*>(base);
  const std::uint64_t ring = control->ring_bytes;
  std::string problem;
  if (at(control->magic).load(std::memory_order_acquire) != kControlMagic)
    problem = "is not a rankmesh channel";
  else if (control->version != kControlVersion)
    problem = "has version " + std::to_string(control->version) + ", this build speaks " +
              std::to_string(kControlVersion);
  else if (control->control_bytes != Layout::kControlBytes || !std::has_single_bit(ring) ||
           ring + Layout::kControlBytes != total || control->receiver_pid <= 0 ||
           !std::has_single_bit(control->ring_in_use) || control->ring_in_use < kMinRing ||
           control->ring_in_use > ring)
    problem = "has an inconsistent layout";
  else if (control->receiver_pid != shm::creator_of(name))
    problem = "names receiver pid " + std::to_string(control->receiver_pid) + " but is offered by pid " +
              std::to_string(shm::creator_of(name));
  else if (std::uint32_t free = 0;
           !at(control->attach_claim).compare_exchange_strong(free, 1))
    problem = "already has a sender";
  if (!problem.empty()) {
    shm::unmap(mapping);
    throw Error(Errc::peer_failed, "shm segment " + name + " " + problem);
  }
  // The receiver stops offering the segment once it sees us attached (on_attached).
  try {
    return std::make_unique<ShmChannel>(Private{}, false, name, base, total, std::move(options));
  } catch (...) {
    shm::unmap(mapping);
    throw;
  }
}

ShmChannel::ShmChannel(Private, bool receiver, std::string name, void* base, std::size_t mapped,
                       ShmOptions options)
    : Channel(shm_traits(options, receiver)),
      receiver_(receiver), name_(std::move(name)), base_(static_cast<std::uint8_t*>(base)),
      mapped_(mapped), options_(std::move(options)), control_(static_cast<Control*>(base)),
      ring_(base_ + Layout::kControlBytes), ring_capacity_(mapped - Layout::kControlBytes),
      ring_bytes_(at(control_->ring_in_use).load(std::memory_order_acquire)) {
  static_assert(sizeof(Control) <= Layout::kControlBytes);
  static_assert(offsetof(Control, tail) == Layout::kTailOffset);
  static_assert(offsetof(Control, head) == Layout::kHeadOffset);
  static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free);
  static_assert(std::atomic_ref<std::uint32_t>::is_always_lock_free);
  if (!options_.allocator) options_.allocator = shared_buffer_pool().allocator();
  if (!options_.log)
    options_.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  if (receiver_) {
    incoming_ = std::make_unique<Incoming>();
    return;
  }
  tail_ = published_tail_ = seen_head_ = at(control_->tail).load(std::memory_order_acquire);
  lent_ready_ = at(control_->lent_ready).load(std::memory_order_acquire);
  probe_word_ = shm::random_u64();
  control_->probe_address = reinterpret_cast<std::uintptr_t>(&probe_word_);
  control_->probe_value = probe_word_;
  at(control_->sender_pid).store(getpid(), std::memory_order_release);
  peer_pid_ = control_->receiver_pid;
  peer_ = shm::ProcessWatch(peer_pid_);
  shm::notify(control_->data_epoch, control_->data_sleepers);  // a receiver may wait for us
}

ShmChannel::~ShmChannel() {
  if (!closed())
    close(receiver_ ? "the receiver (pid " + std::to_string(getpid()) + ") closed the channel"
                    : "the sender (pid " + std::to_string(getpid()) + ") closed the channel");
  if (!receiver_) withdraw_lent();
  stop_offering();
  munmap(base_, mapped_);
}

int ShmChannel::peer_pid() const noexcept {
  return receiver_ ? at(control_->sender_pid).load(std::memory_order_acquire)
                   : control_->receiver_pid;
}

bool ShmChannel::single_copy() const noexcept {
  if (!receiver_ && !options_.single_copy) return false;
  return at(control_->cma_state).load(std::memory_order_acquire) == kCmaWorks;
}

bool ShmChannel::wait_peer(Deadline deadline) {
  if (receiver_) {
    auto attached = [&] {
      return at(control_->sender_pid).load(std::memory_order_acquire) != 0 || closed();
    };
    if (!wait(attached, &control_->data_epoch, &control_->data_sleepers, deadline)) return false;
    if (at(control_->sender_pid).load(std::memory_order_acquire) == 0) throw_closed();
    check_peer(true);
    return true;
  }
  auto probed = [&] {
    return at(control_->cma_state).load(std::memory_order_acquire) != kCmaUnknown || closed();
  };
  if (!wait(probed, &control_->space_epoch, &control_->space_sleepers, deadline)) return false;
  if (at(control_->cma_state).load(std::memory_order_acquire) == kCmaUnknown) throw_closed();
  check_peer(true);
  return true;
}

void ShmChannel::prefault() noexcept {
  // Best effort: a kernel without MADV_POPULATE_WRITE (before 5.14) leaves the faults to the
  // first frame. A fresh channel's first frames land at the start of the ring.
  constexpr std::size_t kFirstFrames = 16 << 10;
  madvise(base_, Layout::kControlBytes + std::min(kFirstFrames, ring_bytes_), MADV_POPULATE_WRITE);
}

// ---- the peer -----------------------------------------------------------------------------

std::string ShmChannel::who() const {
  const int pid = peer_pid_ != 0 ? peer_pid_ : peer_pid();
  if (pid == 0) return options_.peer_name + " (not attached yet)";
  return options_.peer_name + " (pid " + std::to_string(pid) + ")";
}

void ShmChannel::expect_sender(int pid) {
  options_.peer_pid = pid;
  announced_ = shm::ProcessWatch(pid);
}

void ShmChannel::check_peer(bool force) {
  const bool attached =
      peer_pid_ != 0 || (receiver_ && at(control_->sender_pid).load(std::memory_order_acquire) != 0);
  if (attached && peer_pid_ == 0) on_attached();
  // Before the sender attaches, the process announced as the sender is the one to watch: a peer
  // that dies before it ever sent fails the receive waiting for it.
  if (!attached && !announced_.watching()) return;
  const auto now = coarse_now();
  if (!force && now < next_peer_check_) return;
  next_peer_check_ = now + options_.liveness_interval;
  if (!(attached ? peer_alive() : announced_.alive())) peer_died();
}

bool ShmChannel::peer_alive() const noexcept { return peer_.alive(); }

void ShmChannel::on_attached() {
  peer_pid_ = at(control_->sender_pid).load(std::memory_order_acquire);
  peer_ = shm::ProcessWatch(peer_pid_);
  stop_offering();
  if (options_.peer_pid != 0 && peer_pid_ != options_.peer_pid)
    fail("attached from pid " + std::to_string(peer_pid_) + ", but the peer announced pid " +
         std::to_string(options_.peer_pid));
  if (at(control_->cma_state).load(std::memory_order_acquire) == kCmaUnknown)
    probe_peer_memory(peer_pid_, control_->probe_address, control_->probe_value);
}

void ShmChannel::probe_sender(int pid, std::uint64_t address, std::uint64_t expected) noexcept {
  if (receiver_) probe_peer_memory(pid, address, expected);
}

void ShmChannel::probe_peer_memory(int pid, std::uint64_t address, std::uint64_t expected) noexcept {
  std::uint64_t value = 0;
  iovec local{&value, sizeof value};
  iovec remote{reinterpret_cast<void*>(static_cast<std::uintptr_t>(address)), sizeof value};
  const ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  const bool works = got == static_cast<ssize_t>(sizeof value) && value == expected;
  at(control_->cma_state).store(works ? kCmaWorks : kCmaDenied, std::memory_order_release);
  shm::notify(control_->space_epoch, control_->space_sleepers);
}

void ShmChannel::peer_died() {
  // A peer that closed the channel before it went away said why, and that reason stands: its
  // exit may be seen before the closure it wrote when the waiter checks liveness first.
  if (closed()) throw_closed();
  const std::string why = who() + " died";
  close(why);
  throw ChannelClosed(why);
}

// ---- closing ------------------------------------------------------------------------------

bool ShmChannel::closed() const noexcept { return shm::is_closed(control_->closure); }

std::string ShmChannel::closed_reason() const {
  return shm::reason_of(control_->closure, "shm channel " + name_ + " was closed");
}

void ShmChannel::close(const std::string& reason) {
  // The sender's caller may reuse what it lent once the channel is closed: the receiver
  // discards what it reads of it from now on (the flag alone; lent_ belongs to send()).
  if (!receiver_) at(control_->withdrawn).store(1, std::memory_order_seq_cst);
  shm::close(control_->closure, reason);
  stop_offering();
  shm::notify(control_->data_epoch, control_->data_sleepers);
  shm::notify(control_->space_epoch, control_->space_sleepers);
}

void ShmChannel::stop_offering() noexcept {
  const int handoff = handoff_.exchange(-1);
  shm::end_handoff(handoff);
}

void ShmChannel::throw_closed() {
  if (!receiver_) withdraw_lent();
  throw ChannelClosed(closed_reason());
}

void ShmChannel::fail(const std::string& why) {
  const std::string message =
      std::string("shm channel ") + (receiver_ ? "from " : "to ") + who() + ": " + why;
  broken_ = true;
  close(message);
  options_.log(message);
  throw ChannelClosed(message);
}

void ShmChannel::withdraw_lent() noexcept {
  if (lent_.empty()) return;
  // The receiver checks this flag after every read of our memory and discards what it read
  // once it is set; so once it is visible, the memory may go.
  at(control_->withdrawn).store(1, std::memory_order_seq_cst);
  lent_.clear();
  lent_bytes_ = 0;
}

// ---- the ring -----------------------------------------------------------------------------

void ShmChannel::write_ring(std::uint64_t pos, const void* src, std::size_t n) noexcept {
  if (n == 0) return;
  const std::size_t offset = static_cast<std::size_t>(pos & (ring_bytes_ - 1));
  const std::size_t first = std::min(n, ring_bytes_ - offset);
  std::memcpy(ring_ + offset, src, first);
  if (first < n) std::memcpy(ring_, static_cast<const std::uint8_t*>(src) + first, n - first);
}

void ShmChannel::read_ring(std::uint64_t pos, void* dst, std::size_t n) const noexcept {
  if (n == 0) return;
  const std::size_t offset = static_cast<std::size_t>(pos & (ring_bytes_ - 1));
  const std::size_t first = std::min(n, ring_bytes_ - offset);
  std::memcpy(dst, ring_ + offset, first);
  if (first < n) std::memcpy(static_cast<std::uint8_t*>(dst) + first, ring_, n - first);
}

// The counters are published with release stores: the notify right after fences (parker.hpp's
// protocol), one full barrier where a sequentially consistent store added a second.
void ShmChannel::publish_tail() noexcept {
  if (tail_ == published_tail_) return;
  published_tail_ = tail_;
  at(control_->tail).store(tail_, std::memory_order_release);
  shm::notify(control_->data_epoch, control_->data_sleepers);
}

void ShmChannel::publish_head() noexcept {
  if (head_ == published_head_) return;
  published_head_ = head_;
  at(control_->head).store(head_, std::memory_order_release);
  shm::notify(control_->space_epoch, control_->space_sleepers);
}

std::uint64_t ShmChannel::raw_head() const noexcept {
  return at(control_->head).load(std::memory_order_seq_cst);
}

std::uint64_t ShmChannel::raw_lent_ready() const noexcept {
  return at(control_->lent_ready).load(std::memory_order_seq_cst);
}

std::uint64_t ShmChannel::raw_tail() const noexcept {
  return at(control_->tail).load(std::memory_order_seq_cst);
}

void ShmChannel::refresh_head() {
  const std::uint64_t head = raw_head();
  if (head < seen_head_)
    fail("the receiver's counter went back from " + std::to_string(seen_head_) + " to " +
         std::to_string(head));
  if (head > published_tail_)
    fail("the receiver's counter " + std::to_string(head) + " is beyond the " +
         std::to_string(published_tail_) + " bytes sent");
  seen_head_ = head;
}

void ShmChannel::refresh_tail() {
  const std::uint64_t tail = raw_tail();
  // Read after the counter: the sender sets a new size before the first byte written at it.
  const std::uint64_t size = at(control_->ring_in_use).load(std::memory_order_acquire);
  if (size != ring_bytes_) {
    if (!std::has_single_bit(size) || size < ring_bytes_ || size > ring_capacity_ ||
        published_head_ != head_ || head_ != seen_tail_)
      fail("the sender set a ring size of " + std::to_string(size) + " bytes (was " +
           std::to_string(ring_bytes_) + ", the segment holds " + std::to_string(ring_capacity_) +
           ") while the ring was not empty or beyond the segment");
    ring_bytes_ = static_cast<std::size_t>(size);
  }
  if (tail < seen_tail_)
    fail("the sender's counter went back from " + std::to_string(seen_tail_) + " to " +
         std::to_string(tail));
  if (tail - published_head_ > ring_bytes_)
    fail("the sender's counter " + std::to_string(tail) + " is beyond the ring (" +
         std::to_string(tail - published_head_) + " bytes unread in a ring of " +
         std::to_string(ring_bytes_) + ")");
  seen_tail_ = tail;
}

}  // namespace rankmesh
