#include "shm/shm_channel.hpp"

#include <sys/mman.h>
#include <sys/uio.h>
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

namespace rankmesh {
namespace {

constexpr std::uint64_t kControlMagic = 0x3142434d48534d52;  // "RMSHMCB1"
constexpr std::uint32_t kControlVersion = 1;
constexpr std::size_t kMinRing = std::size_t{64} << 10;
constexpr std::size_t kMaxRing = std::size_t{1} << 30;
constexpr std::size_t kPullChunk = std::size_t{8} << 20;

// What the receiver found out about reading the sender's memory with process_vm_readv.
enum : std::uint32_t { kCmaUnknown = 0, kCmaWorks = 1, kCmaDenied = 2 };

using shm::at;

std::string hex(std::uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

}  // namespace

// The first page of the segment. Plain integers, accessed through std::atomic_ref where both
// sides touch them. Each counter sits on its own cache line with the words its writer owns.
struct ShmChannel::Control {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t control_bytes;
  std::uint64_t ring_bytes;
  std::int32_t receiver_pid;
  std::int32_t sender_pid;      // set (last) when the sender has attached
  std::uint32_t attach_claim;   // 0 -> 1 by the one sender that may attach
  std::uint32_t cma_state;      // kCma*
  std::uint64_t probe_address;  // a word in the sender the receiver tries to read
  std::uint64_t probe_value;
  std::uint32_t withdrawn;      // the sender no longer lends payloads: do not read them
  std::uint32_t unused0;
  alignas(64) std::uint64_t tail;  // written by the sender
  std::uint32_t data_epoch;        // bumped by the sender: "bytes or news for the receiver"
  std::uint32_t space_sleepers;    // senders parked on space_epoch
  alignas(64) std::uint64_t head;  // written by the receiver
  std::uint32_t space_epoch;       // bumped by the receiver: "space or news for the sender"
  std::uint32_t data_sleepers;     // receivers parked on data_epoch
  alignas(64) shm::Closure closure;
};


struct ShmChannel::Incoming {
  bool active = false;
  Frame frame;
  std::vector<TensorDescriptor> described;  // its tensors, from the descriptors
  std::uint64_t end = 0;   // ring position where the record ends
  std::size_t tensor = 0;  // the payload in progress
  std::size_t done = 0;    // its bytes taken so far (or of its reference)
  std::uint8_t reference[kLentPayloadBytes] = {};
};

// ---- set-up -------------------------------------------------------------------------------

ShmChannel::Created ShmChannel::create(ShmOptions options) {
  if (options.ring_bytes > kMaxRing)
    throw Error(Errc::invalid_argument, "shm ring of " + std::to_string(options.ring_bytes) +
                                            " bytes is beyond the limit of 1 GiB");
  if (options.liveness_interval <= std::chrono::nanoseconds::zero())
    throw Error(Errc::invalid_argument, "shm liveness_interval must be positive");
  const std::size_t ring = std::bit_ceil(std::max(options.ring_bytes, kMinRing));
  const std::size_t total = Layout::kControlBytes + ring;
  std::string name;
  int handoff = -1;
  const shm::Mapping mapping = shm::create_segment(total, name, handoff);
  void* base = mapping.base;
  auto* control = static_cast<Control*>(base);  // the fresh segment reads as zeros
  control->version = kControlVersion;
  control->control_bytes = Layout::kControlBytes;
  control->ring_bytes = ring;
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
                                                 "rankmesh channel", options.peer_pid);
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
           ring + Layout::kControlBytes != total || control->receiver_pid <= 0)
    problem = "has an inconsistent layout";
  else if (control->receiver_pid != shm::creator_of(name))
    problem = "names receiver pid " + std::to_string(control->receiver_pid) + " but is offered by pid " +
              std::to_string(shm::creator_of(name));
  else if (std::uint32_t free = 0;
           !at(control->attach_claim).compare_exchange_strong(free, 1))
    problem = "already has a sender";
  if (!problem.empty()) {
    shm::unmap(mapping);
    throw Error(Errc::invalid_argument, "shm segment " + name + " " + problem);
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
    : Channel(ChannelTraits{.copies_up_to = options.inline_threshold, .lands_payloads = receiver}),
      receiver_(receiver), name_(std::move(name)), base_(static_cast<std::uint8_t*>(base)),
      mapped_(mapped), options_(std::move(options)), control_(static_cast<Control*>(base)),
      ring_(base_ + Layout::kControlBytes), ring_bytes_(mapped - Layout::kControlBytes) {
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

// ---- waiting ------------------------------------------------------------------------------

// Spins, then parks on the futex word `epoch` in slices of liveness_interval, checking the peer
// between slices.
template <class Ready>
bool ShmChannel::wait(Ready&& ready, std::uint32_t* epoch, std::uint32_t* sleepers,
                      Deadline deadline) {
  return shm::wait_for(ready, *epoch, *sleepers, deadline,
                       options_.spin_for.value_or(spin_budget()), options_.liveness_interval,
                       [this] { check_peer(true); });
}

// ---- the peer -----------------------------------------------------------------------------

std::string ShmChannel::who() const {
  const int pid = peer_pid_ != 0 ? peer_pid_ : peer_pid();
  if (pid == 0) return options_.peer_name + " (not attached yet)";
  return options_.peer_name + " (pid " + std::to_string(pid) + ")";
}

void ShmChannel::check_peer(bool force) {
  if (peer_pid_ == 0) {
    if (!receiver_ || at(control_->sender_pid).load(std::memory_order_acquire) == 0) return;
    on_attached();
  }
  const auto now = Clock::now();
  if (!force && now < next_peer_check_) return;
  next_peer_check_ = now + options_.liveness_interval;
  if (!peer_alive()) peer_died();
}

bool ShmChannel::peer_alive() const noexcept { return peer_.alive(); }

void ShmChannel::on_attached() {
  peer_pid_ = at(control_->sender_pid).load(std::memory_order_acquire);
  peer_ = shm::ProcessWatch(peer_pid_);
  stop_offering();
  if (options_.peer_pid != 0 && peer_pid_ != options_.peer_pid)
    fail("attached from pid " + std::to_string(peer_pid_) + ", but the peer announced pid " +
         std::to_string(options_.peer_pid));
  if (at(control_->cma_state).load(std::memory_order_acquire) == kCmaUnknown) probe_peer_memory();
}

void ShmChannel::probe_peer_memory() {
  const std::uint64_t address = control_->probe_address;
  const std::uint64_t expected = control_->probe_value;
  std::uint64_t value = 0;
  iovec local{&value, sizeof value};
  iovec remote{reinterpret_cast<void*>(static_cast<std::uintptr_t>(address)), sizeof value};
  const ssize_t got = process_vm_readv(peer_pid_, &local, 1, &remote, 1, 0);
  const bool works = got == static_cast<ssize_t>(sizeof value) && value == expected;
  at(control_->cma_state).store(works ? kCmaWorks : kCmaDenied, std::memory_order_release);
  shm::notify(control_->space_epoch, control_->space_sleepers);
}

void ShmChannel::peer_died() {
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

void ShmChannel::publish_tail() noexcept {
  if (tail_ == published_tail_) return;
  published_tail_ = tail_;
  at(control_->tail).store(tail_, std::memory_order_seq_cst);
  shm::notify(control_->data_epoch, control_->data_sleepers);
}

void ShmChannel::publish_head() noexcept {
  if (head_ == published_head_) return;
  published_head_ = head_;
  at(control_->head).store(head_, std::memory_order_seq_cst);
  shm::notify(control_->space_epoch, control_->space_sleepers);
}

std::uint64_t ShmChannel::raw_head() const noexcept {
  return at(control_->head).load(std::memory_order_seq_cst);
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
  if (tail < seen_tail_)
    fail("the sender's counter went back from " + std::to_string(seen_tail_) + " to " +
         std::to_string(tail));
  if (tail - published_head_ > ring_bytes_)
    fail("the sender's counter " + std::to_string(tail) + " is beyond the ring (" +
         std::to_string(tail - published_head_) + " bytes unread in a ring of " +
         std::to_string(ring_bytes_) + ")");
  seen_tail_ = tail;
}

// ---- sending ------------------------------------------------------------------------------

void ShmChannel::release_consumed() {
  refresh_head();
  while (!lent_.empty() && lent_.front().end <= seen_head_) {
    lent_bytes_ -= lent_.front().bytes;
    lent_.pop_front();
  }
}

void ShmChannel::wait_space(std::size_t bytes, Deadline deadline, const char* what) {
  auto room = [&] { return closed() || raw_head() + ring_bytes_ >= tail_ + bytes; };
  if (!wait(room, &control_->space_epoch, &control_->space_sleepers, deadline)) {
    throw ChannelTimeout("shm channel to " + who() + ": the ring stayed full until the deadline (" +
                         what + ")");
  }
  if (closed()) throw_closed();
  refresh_head();
}

void ShmChannel::stream_out(const std::uint8_t* src, std::size_t n, Deadline deadline) {
  const std::size_t chunk = ring_bytes_ / 4;
  while (n > 0) {
    std::size_t space = ring_bytes_ - static_cast<std::size_t>(tail_ - seen_head_);
    if (space < std::min(n, chunk)) {
      refresh_head();
      space = ring_bytes_ - static_cast<std::size_t>(tail_ - seen_head_);
    }
    if (space < std::min(n, chunk)) {
      publish_tail();
      const std::size_t want = std::min(n, chunk);
      auto room = [&] { return closed() || raw_head() + ring_bytes_ >= tail_ + want; };
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
    const std::size_t k = std::min(space, n);
    write_ring(tail_, src, k);
    tail_ += k;
    src += k;
    n -= k;
    if (tail_ - published_tail_ >= chunk) publish_tail();
  }
}

void ShmChannel::send(Frame& frame, Deadline deadline) {
  if (receiver_)
    throw Error(Errc::invalid_argument, "send on the receiving end of shm channel " + name_);
  if (broken_ || closed()) throw_closed();
  check_peer(false);

  auto to = [&] { return "shm channel to " + who(); };
  check_frame_limits(frame, options_.limits);
  // Payloads above the threshold are lent (read by the receiver from our memory) where it may.
  const bool one_copy = options_.single_copy &&
                        at(control_->cma_state).load(std::memory_order_acquire) == kCmaWorks;
  const std::span<const iovec> spans =
      encoder_.encode(frame, link_seq_, one_copy ? options_.inline_threshold : FrameEncoder::kNeverLend);
  const std::size_t prefix = encoder_.prefix_bytes();
  if (prefix > ring_bytes_)
    throw Error(Errc::limit_exceeded,
                to() + ": the frame's header, descriptors and metadata (" + std::to_string(prefix) +
                    " bytes) do not fit the ring of " + std::to_string(ring_bytes_) + " bytes");

  // The bytes must be final before anyone reads them.
  wait_payloads_ready(frame, deadline);

  release_consumed();
  const std::size_t lent = encoder_.lent_bytes();
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
      if (!wait(taken, &control_->space_epoch, &control_->space_sleepers, deadline))
        throw ChannelTimeout(to() + ": the receiver did not take earlier payloads before the deadline");
      if (closed()) throw_closed();
      release_consumed();
    }
  }

  const std::uint64_t record = encoder_.size();
  if (record <= ring_bytes_) {
    wait_space(static_cast<std::size_t>(record), deadline, "waiting for room for a frame");
  } else {
    wait_space(prefix, deadline, "waiting for room for a frame's header");
  }
  // Everything below writes the frame; only a receiver that stops for good interrupts it. The
  // prefix (header, descriptors, metadata) goes in at once, the payloads may stream.
  std::size_t unwritten_prefix = prefix;
  for (const iovec& span : spans) {
    const auto* bytes = static_cast<const std::uint8_t*>(span.iov_base);
    const std::size_t at_once = std::min(unwritten_prefix, span.iov_len);
    write_ring(tail_, bytes, at_once);
    tail_ += at_once;
    unwritten_prefix -= at_once;
    if (at_once == span.iov_len) continue;
    if (record > ring_bytes_) publish_tail();  // the receiver may start while we stream the rest
    stream_out(bytes + at_once, span.iov_len - at_once, deadline);
  }
  publish_tail();
  ++link_seq_;

  if (lent > 0) {
    Pending pending{tail_, lent, {}};
    for (std::size_t i = 0; i < frame.tensors.size(); ++i)
      if (encoder_.lent(i)) pending.tensors.push_back(std::move(frame.tensors[i]));
    lent_.push_back(std::move(pending));
    lent_bytes_ += lent;
  }
  frame.tensors.clear();
  frame.metadata.clear();
}

bool ShmChannel::flush(Deadline deadline) {
  if (receiver_)
    throw Error(Errc::invalid_argument, "flush on the receiving end of shm channel " + name_);
  if (closed()) throw_closed();
  auto taken = [&] { return closed() || raw_head() >= tail_; };
  if (!wait(taken, &control_->space_epoch, &control_->space_sleepers, deadline)) return false;
  if (raw_head() < tail_) throw_closed();
  release_consumed();
  return true;
}

// ---- receiving ----------------------------------------------------------------------------

// Copies the next `n - done` bytes of the record into `dst + done`, waiting for the sender as
// needed; false at the deadline (progress is kept in `done`).
bool ShmChannel::fill(std::uint8_t* dst, std::size_t n, std::size_t& done, Deadline deadline) {
  const std::size_t chunk = ring_bytes_ / 4;
  const std::uint64_t end = incoming_->end;
  while (done < n) {
    if (seen_tail_ == head_) refresh_tail();
    if (seen_tail_ == head_) {
      publish_head();  // head_ < end here: lent payloads of this record stay lent
      auto more = [&] { return raw_tail() != head_ || closed(); };
      if (!wait(more, &control_->data_epoch, &control_->data_sleepers, deadline)) return false;
      refresh_tail();
      if (seen_tail_ == head_) throw_closed();
      continue;
    }
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(seen_tail_ - head_, n - done));
    read_ring(head_, dst + done, k);
    head_ += k;
    done += k;
    // Never publish the record's end before its lent payloads are read: that would let the
    // sender free them.
    if (head_ - published_head_ >= chunk && head_ < end) publish_head();
  }
  return true;
}

void ShmChannel::pull(void* dst, std::uint64_t address, std::size_t length) {
  if (at(control_->cma_state).load(std::memory_order_acquire) != kCmaWorks)
    fail("a payload came by reference although cross-process reads were never established");
  auto* out = static_cast<std::uint8_t*>(dst);
  std::size_t done = 0;
  while (done < length) {
    if (at(control_->withdrawn).load(std::memory_order_seq_cst) != 0) throw_closed();
    const std::size_t k = std::min(kPullChunk, length - done);
    iovec local{out + done, k};
    iovec remote{reinterpret_cast<void*>(static_cast<std::uintptr_t>(address + done)), k};
    const ssize_t got = process_vm_readv(peer_pid_, &local, 1, &remote, 1, 0);
    if (got > 0) {
      done += static_cast<std::size_t>(got);
      continue;
    }
    const int error = got < 0 ? errno : EFAULT;
    if (error == EINTR) continue;
    if (error == ESRCH || !peer_alive()) peer_died();
    // A sender being killed loses its memory a moment before its pidfd says so.
    if (peer_.exits_within(std::chrono::milliseconds(100))) peer_died();
    if (at(control_->withdrawn).load(std::memory_order_seq_cst) != 0) throw_closed();
    if (error == EFAULT)
      fail("its payload at 0x" + hex(address) + " (" + std::to_string(length) +
           " bytes) is not readable");
    fail(std::string("reading its memory failed: ") + std::strerror(error));
  }
  // What we read is only good if the sender had not withdrawn it by the time we finished, and
  // if the pid still names the sender (it cannot be reused while the sender lives).
  if (at(control_->withdrawn).load(std::memory_order_seq_cst) != 0) throw_closed();
  if (!peer_alive()) peer_died();
}

bool ShmChannel::start_frame(Deadline deadline) {
  auto have = [&](std::uint64_t n) {
    return [this, n] { return raw_tail() - head_ >= n || closed(); };
  };
  if (!wait(have(kFrameHeaderBytes), &control_->data_epoch, &control_->data_sleepers, deadline))
    return false;
  refresh_tail();
  if (seen_tail_ - head_ < kFrameHeaderBytes) throw_closed();

  std::uint8_t bytes[kFrameHeaderBytes];
  read_ring(head_, bytes, sizeof bytes);
  WireHeader header;
  if (WireError error = parse_frame_header(bytes, expected_seq_, options_.limits, header))
    fail("frame " + std::to_string(expected_seq_) + ": " + error.what + " at byte " +
         std::to_string(head_) + " of the ring");
  // The sender writes a frame's header, descriptors and metadata in one piece.
  const std::uint64_t prefix = header.prefix_bytes();
  if (prefix > ring_bytes_)
    fail("frame " + std::to_string(header.link_seq) + " claims a header of " +
         std::to_string(prefix) + " bytes, beyond the ring of " + std::to_string(ring_bytes_));

  if (!wait(have(prefix), &control_->data_epoch, &control_->data_sleepers, deadline))
    return false;
  refresh_tail();
  if (seen_tail_ - head_ < prefix) throw_closed();

  Incoming& in = *incoming_;
  std::vector<TensorDescriptor>& described = in.described;
  described.assign(header.tensors, TensorDescriptor{});
  std::uint64_t payload = 0;
  std::uint64_t body = 0;
  for (std::size_t i = 0; i < described.size(); ++i) {
    std::uint8_t descriptor[kDescriptorBytes];
    read_ring(head_ + kFrameHeaderBytes + i * kDescriptorBytes, descriptor, sizeof descriptor);
    if (WireError error = parse_descriptor(descriptor, i, described[i]))
      fail("frame " + std::to_string(header.link_seq) + " " + error.what);
    if (described[i].nbytes > header.payload_bytes - payload)
      fail("frame " + std::to_string(header.link_seq) + ": its tensors need more than the header's "
           "payload length of " + std::to_string(header.payload_bytes) + " bytes");
    payload += described[i].nbytes;
    body += described[i].lent ? kLentPayloadBytes : described[i].nbytes;
  }
  if (payload != header.payload_bytes)
    fail("frame " + std::to_string(header.link_seq) + ": the header's payload length is " +
         std::to_string(header.payload_bytes) + " bytes but its tensors need " + std::to_string(payload));

  const FrameHeader& frame_header = header.frame;
  // Memory for every payload first: if the allocator throws, nothing has been consumed.
  in.frame.tensors.clear();
  for (std::size_t i = 0; i < described.size(); ++i) {
    const Shape& shape = described[i].shape;
    const DType dtype = described[i].dtype;
    Tensor tensor = landing_ != nullptr && landing_->fits(frame_header, i, shape, dtype)
                        ? landing_->tensors[i]
                        : options_.allocator(shape, dtype);
    if (!tensor.defined() || tensor.device().type != DeviceType::cpu || !(tensor.shape() == shape) ||
        tensor.dtype() != dtype) {
      in.frame.tensors.clear();
      throw Error(Errc::invalid_argument, "shm channel from " + who() +
                                              ": the allocator did not return a host tensor of " +
                                              to_string(shape) + " " + to_string(dtype));
    }
    in.frame.tensors.push_back(std::move(tensor));
  }
  in.frame.metadata.resize(header.metadata_bytes);
  if (header.metadata_bytes > 0)
    read_ring(head_ + kFrameHeaderBytes + std::uint64_t{header.tensors} * kDescriptorBytes,
              in.frame.metadata.data(), header.metadata_bytes);
  in.frame.header = frame_header;
  head_ += prefix;
  in.end = head_ + body;
  in.tensor = 0;
  in.done = 0;
  in.active = true;
  return true;
}

bool ShmChannel::recv(Frame& frame, Deadline deadline) {
  if (!receiver_)
    throw Error(Errc::invalid_argument, "recv on the sending end of shm channel " + name_);
  if (broken_) throw_closed();  // what is left in the ring cannot be trusted
  // The peer's liveness is checked only when there is nothing to read: what a sender wrote
  // before it went away is still delivered.
  if (peer_pid_ == 0 && at(control_->sender_pid).load(std::memory_order_acquire) != 0)
    on_attached();
  Incoming& in = *incoming_;
  if (!in.active && !start_frame(deadline)) return false;
  while (in.tensor < in.frame.tensors.size()) {
    Tensor& tensor = in.frame.tensors[in.tensor];
    const std::size_t nbytes = tensor.nbytes();
    if (in.described[in.tensor].lent) {
      if (!fill(in.reference, sizeof in.reference, in.done, deadline)) return false;
      const auto [address, length] = read_lent_payload(in.reference);
      if (length != nbytes)
        fail("frame " + std::to_string(expected_seq_) + " lends " + std::to_string(length) +
             " bytes for tensor " + std::to_string(in.tensor) + " of " + std::to_string(nbytes));
      pull(tensor.data(), address, nbytes);
    } else if (!fill(static_cast<std::uint8_t*>(tensor.data()), nbytes, in.done, deadline)) {
      return false;
    }
    in.done = 0;
    ++in.tensor;
  }
  if (head_ != in.end) fail("frame " + std::to_string(expected_seq_) + " ends out of place");
  publish_head();
  ++expected_seq_;
  in.active = false;
  frame.header = in.frame.header;
  frame.metadata.swap(in.frame.metadata);
  frame.tensors.swap(in.frame.tensors);
  in.frame.tensors.clear();
  return true;
}

}  // namespace rankmesh
