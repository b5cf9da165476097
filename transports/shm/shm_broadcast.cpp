#include "shm/shm_broadcast.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>

#include "channel.hpp"
#include "parker.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

constexpr std::uint64_t kMagic = 0x3143424d48534d52;  // "RMSHMBC1"
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kControlBytes = 4096;
constexpr std::size_t kSlotHeaderBytes = 64;
constexpr std::size_t kMaxSlots = 4096;
constexpr std::size_t kMaxSlotBytes = std::size_t{64} << 20;
constexpr std::size_t kMaxSegment = std::size_t{2} << 30;

using shm::at;

std::size_t stride_of(std::size_t slot_bytes) {
  return kSlotHeaderBytes + (slot_bytes + 63) / 64 * 64;
}

}  // namespace

// One reader's line: what it has acknowledged, and who it is.
struct alignas(64) ReaderState {
  std::uint64_t acked;  // chunks taken (written by the reader)
  std::int32_t pid;     // set when the reader attaches
  std::uint32_t claim;  // 0 -> 1 by the one process that may be this reader
};

// The segment's first page. Plain integers, accessed through std::atomic_ref where both sides
// touch them; each side's counters on cache lines of their own.
struct ShmBroadcastRing::Control {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t readers;
  std::uint64_t slots;
  std::uint64_t slot_bytes;
  std::int32_t writer_pid;
  std::uint32_t attached;          // readers attached so far
  alignas(64) std::uint32_t data_epoch;  // bumped by the writer: "a chunk or news"
  std::uint32_t data_sleepers;           // readers parked on it
  alignas(64) std::uint32_t ack_epoch;   // bumped by readers: "a slot may be free, or news"
  std::uint32_t ack_sleepers;            // the writer, parked on it
  alignas(64) shm::Closure closure;
  ReaderState reader[kMaxReaders];
};

// A slot: its header, then slot_bytes of data. `seq` is the chunk number + 1 that it holds,
// stored last by the writer; a reader reads the rest only after seeing it.
struct ShmBroadcastRing::Slot {
  std::uint64_t seq;
  std::uint64_t tag;
  std::uint64_t total;   // bytes of the whole object
  std::uint64_t offset;  // of this chunk in it
  std::uint64_t length;  // of this chunk
  std::uint8_t unused[kSlotHeaderBytes - 40];
  std::uint8_t data[];
};

// ---- set-up -------------------------------------------------------------------------------

ShmBroadcastRing::Created ShmBroadcastRing::create(int readers, ShmBroadcastOptions options) {
  static_assert(sizeof(Control) <= kControlBytes);
  static_assert(offsetof(Slot, data) == kSlotHeaderBytes);
  if (readers < 1 || readers > kMaxReaders)
    throw Error(Errc::invalid_argument, "a broadcast ring has 1 to " + std::to_string(kMaxReaders) +
                                            " readers, not " + std::to_string(readers));
  if (options.slots < 2 || options.slots > kMaxSlots)
    throw Error(Errc::invalid_argument, "a broadcast ring has 2 to " + std::to_string(kMaxSlots) +
                                            " slots, not " + std::to_string(options.slots));
  if (options.slot_bytes < 64 || options.slot_bytes > kMaxSlotBytes)
    throw Error(Errc::invalid_argument, "a broadcast ring slot carries 64 B to 64 MiB, not " +
                                            std::to_string(options.slot_bytes) + " bytes");
  const std::size_t total = kControlBytes + options.slots * stride_of(options.slot_bytes);
  if (total > kMaxSegment)
    throw Error(Errc::invalid_argument, "a broadcast ring of " + std::to_string(total) +
                                            " bytes is beyond the limit of 2 GiB");
  if (!options.reader_names.empty() &&
      options.reader_names.size() != static_cast<std::size_t>(readers))
    throw Error(Errc::invalid_argument, "a broadcast ring for " + std::to_string(readers) +
                                            " readers got " +
                                            std::to_string(options.reader_names.size()) + " names");
  std::string name;
  int handoff = -1;
  const shm::Mapping mapping = shm::create_segment(total, name, handoff);
  auto* control = reinterpret_cast<Control*>(mapping.base);  // the fresh segment reads as zeros
  control->version = kVersion;
  control->readers = static_cast<std::uint32_t>(readers);
  control->slots = options.slots;
  control->slot_bytes = options.slot_bytes;
  control->writer_pid = getpid();
  at(control->magic).store(kMagic, std::memory_order_release);
  try {
    auto ring = std::make_unique<ShmBroadcastRing>(Private{}, -1, name, mapping, std::move(options));
    ring->handoff_ = handoff;
    return Created{std::move(ring), name};
  } catch (...) {
    shm::unmap(mapping);
    shm::end_handoff(handoff);
    throw;
  }
}

std::unique_ptr<ShmBroadcastRing> ShmBroadcastRing::open(const std::string& name, int reader,
                                                         ShmBroadcastOptions options) {
  const shm::Mapping mapping =
      shm::open_segment(name, kControlBytes + 2 * stride_of(64), kMaxSegment, "broadcast ring",
                        options.writer_pid);
  auto* control = reinterpret_cast<Control*>(mapping.base);
  std::string problem;
  const std::uint64_t slots = control->slots;
  const std::uint64_t slot_bytes = control->slot_bytes;
  if (at(control->magic).load(std::memory_order_acquire) != kMagic)
    problem = "is not a broadcast ring";
  else if (control->version != kVersion)
    problem = "has version " + std::to_string(control->version) + ", this build speaks " +
              std::to_string(kVersion);
  else if (control->readers < 1 || control->readers > kMaxReaders || slots < 2 ||
           slots > kMaxSlots || slot_bytes < 64 || slot_bytes > kMaxSlotBytes ||
           kControlBytes + slots * stride_of(slot_bytes) != mapping.bytes ||
           control->writer_pid <= 0)
    problem = "has an inconsistent layout";
  else if (control->writer_pid != shm::creator_of(name))
    problem = "names writer pid " + std::to_string(control->writer_pid) + " but is offered by pid " +
              std::to_string(shm::creator_of(name));
  else if (reader < 0 || static_cast<std::uint32_t>(reader) >= control->readers)
    problem = "has no reader " + std::to_string(reader) + " (it has " +
              std::to_string(control->readers) + ")";
  else if (std::uint32_t free = 0;
           !at(control->reader[reader].claim).compare_exchange_strong(free, 1))
    problem = "already has its reader " + std::to_string(reader);
  if (!problem.empty()) {
    shm::unmap(mapping);
    throw Error(Errc::peer_failed, "shm segment " + name + " " + problem);
  }
  std::unique_ptr<ShmBroadcastRing> ring;
  try {
    ring = std::make_unique<ShmBroadcastRing>(Private{}, reader, name, mapping, std::move(options));
  } catch (...) {
    shm::unmap(mapping);
    throw;
  }
  at(control->reader[reader].pid).store(getpid(), std::memory_order_release);
  at(control->attached).fetch_add(1);
  // The writer may wait for us; once every reader has attached it stops offering the segment.
  shm::notify(control->ack_epoch, control->ack_sleepers);
  return ring;
}

ShmBroadcastRing::ShmBroadcastRing(Private, int reader, std::string name, shm::Mapping mapping,
                                   ShmBroadcastOptions options)
    : reader_(reader), name_(std::move(name)), mapping_(mapping), options_(std::move(options)),
      control_(reinterpret_cast<Control*>(mapping.base)),
      slots_(static_cast<std::size_t>(control_->slots)),
      slot_bytes_(static_cast<std::size_t>(control_->slot_bytes)) {
  if (options_.liveness_interval <= std::chrono::nanoseconds::zero())
    throw Error(Errc::invalid_argument, "broadcast ring liveness_interval must be positive");
  if (!options_.log)
    options_.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  if (is_writer()) {
    reader_watch_.resize(control_->readers);
  } else {
    writer_watch_ = shm::ProcessWatch(control_->writer_pid);
    expected_ = at(control_->reader[reader_].acked).load(std::memory_order_acquire);
  }
}

ShmBroadcastRing::~ShmBroadcastRing() {
  if (!closed())
    close((is_writer() ? "the writer" : "reader " + std::to_string(reader_)) + " (pid " +
          std::to_string(getpid()) + ") closed broadcast ring " + name_);
  shm::end_handoff(handoff_);
  shm::unmap(mapping_);
}

bool ShmBroadcastRing::all_attached() const noexcept {
  return at(control_->attached).load(std::memory_order_acquire) == control_->readers;
}

void ShmBroadcastRing::stop_offering_once_attached() noexcept {
  if (handoff_ >= 0 && all_attached()) {
    shm::end_handoff(handoff_);
    handoff_ = -1;
  }
}

bool ShmBroadcastRing::wait_attached(Deadline deadline) {
  if (!is_writer())
    throw Error(Errc::invalid_argument, "wait_attached on reader " + std::to_string(reader_) +
                                            " of broadcast ring " + name_);
  auto attached = [&] { return all_attached() || closed(); };
  const bool done = wait(attached, control_->ack_epoch, control_->ack_sleepers, deadline);
  stop_offering_once_attached();
  return done && all_attached();
}

int ShmBroadcastRing::readers() const noexcept { return static_cast<int>(control_->readers); }

ShmBroadcastRing::Slot& ShmBroadcastRing::slot(std::uint64_t chunk) const noexcept {
  return *reinterpret_cast<Slot*>(mapping_.base + kControlBytes +
                                  (chunk % slots_) * stride_of(slot_bytes_));
}

// ---- waiting and the other side -----------------------------------------------------------

template <class Ready>
bool ShmBroadcastRing::wait(Ready&& ready, std::uint32_t& epoch, std::uint32_t& sleepers,
                            Deadline deadline) {
  return shm::wait_for(ready, epoch, sleepers, deadline, options_.spin_for.value_or(spin_budget()),
                       options_.liveness_interval, [this] { check_others(); });
}

std::string ShmBroadcastRing::reader_name(int reader) const {
  if (static_cast<std::size_t>(reader) < options_.reader_names.size())
    return options_.reader_names[static_cast<std::size_t>(reader)];
  return "reader " + std::to_string(reader);
}

// Throws ChannelClosed when a process this side waits for has died. Called only while waiting,
// so whatever the other side wrote before it went away is delivered first.
void ShmBroadcastRing::check_others() {
  if (!is_writer()) {
    if (!writer_watch_.alive()) {
      const std::string why = options_.writer_name + " (pid " +
                              std::to_string(writer_watch_.pid()) + ") died";
      close(why);
      throw ChannelClosed(why);
    }
    return;
  }
  for (int i = 0; i < readers(); ++i) {
    shm::ProcessWatch& watch = reader_watch_[static_cast<std::size_t>(i)];
    if (!watch.watching()) {
      const int pid = at(control_->reader[i].pid).load(std::memory_order_acquire);
      if (pid == 0) continue;  // not attached yet
      watch = shm::ProcessWatch(pid);
    }
    if (!watch.alive()) {
      const std::string why = reader_name(i) + " (pid " + std::to_string(watch.pid()) + ") died";
      close(why);
      throw ChannelClosed(why);
    }
  }
}

bool ShmBroadcastRing::closed() const noexcept { return shm::is_closed(control_->closure); }

std::string ShmBroadcastRing::closed_reason() const {
  return shm::reason_of(control_->closure, "broadcast ring " + name_ + " was closed");
}

void ShmBroadcastRing::close(const std::string& reason) {
  shm::close(control_->closure, reason);
  shm::notify(control_->data_epoch, control_->data_sleepers);
  shm::notify(control_->ack_epoch, control_->ack_sleepers);
}

void ShmBroadcastRing::fail(const std::string& why) {
  const std::string message =
      "broadcast ring " + name_ + " from " + options_.writer_name + ": " + why;
  close(message);
  options_.log(message);
  throw ChannelClosed(message);
}

std::uint64_t ShmBroadcastRing::slowest_ack(int* slowest) const noexcept {
  std::uint64_t least = std::numeric_limits<std::uint64_t>::max();
  for (int i = 0; i < readers(); ++i) {
    const std::uint64_t acked = at(control_->reader[i].acked).load(std::memory_order_acquire);
    if (acked < least) {
      least = acked;
      if (slowest != nullptr) *slowest = i;
    }
  }
  return least;
}

// ---- writing ------------------------------------------------------------------------------

void ShmBroadcastRing::write(std::uint64_t tag, const std::uint8_t* data, std::size_t size,
                             Deadline deadline) {
  if (!is_writer())
    throw Error(Errc::invalid_argument, "write on reader " + std::to_string(reader_) +
                                            " of broadcast ring " + name_);
  if (closed()) throw ChannelClosed(closed_reason());
  if (size > options_.max_object_bytes)
    throw Error(Errc::limit_exceeded, "broadcast ring " + name_ + ": an object of " +
                                          std::to_string(size) + " bytes is beyond the limit of " +
                                          std::to_string(options_.max_object_bytes));
  stop_offering_once_attached();
  std::size_t offset = 0;
  do {
    const std::uint64_t chunk = next_;
    // A reader that has taken `acked` chunks is done with every slot below it.
    auto free = [&] { return closed() || slowest_ack(nullptr) + slots_ > chunk; };
    if (!wait(free, control_->ack_epoch, control_->ack_sleepers, deadline)) {
      int slowest = 0;
      const std::uint64_t acked = slowest_ack(&slowest);
      throw ChannelTimeout("broadcast ring " + name_ + ": " + reader_name(slowest) +
                           " left the ring full until the deadline (it has taken " +
                           std::to_string(acked) + " of " + std::to_string(chunk) + " chunks)");
    }
    if (closed()) throw ChannelClosed(closed_reason());
    if (slowest_ack(nullptr) > chunk)
      fail("a reader acknowledged chunks that were never written");
    Slot& s = slot(chunk);
    const std::size_t length = std::min(slot_bytes_, size - offset);
    if (length > 0) std::memcpy(s.data, data + offset, length);
    s.tag = tag;
    s.total = size;
    s.offset = offset;
    s.length = length;
    at(s.seq).store(chunk + 1, std::memory_order_release);
    next_ = chunk + 1;
    shm::notify(control_->data_epoch, control_->data_sleepers);
    offset += length;
  } while (offset < size);
}

bool ShmBroadcastRing::flush(Deadline deadline) {
  if (!is_writer())
    throw Error(Errc::invalid_argument, "flush on reader " + std::to_string(reader_) +
                                            " of broadcast ring " + name_);
  auto taken = [&] { return closed() || slowest_ack(nullptr) >= next_; };
  if (!wait(taken, control_->ack_epoch, control_->ack_sleepers, deadline)) return false;
  if (slowest_ack(nullptr) < next_) throw ChannelClosed(closed_reason());
  return true;
}

// ---- reading ------------------------------------------------------------------------------

bool ShmBroadcastRing::read(std::uint64_t& tag, std::vector<std::uint8_t>& out,
                            Deadline deadline) {
  if (is_writer())
    throw Error(Errc::invalid_argument, "read on the writer of broadcast ring " + name_);
  while (true) {
    const std::uint64_t chunk = expected_;
    Slot& s = slot(chunk);
    auto written = [&] { return at(s.seq).load(std::memory_order_acquire) > chunk || closed(); };
    if (!wait(written, control_->data_epoch, control_->data_sleepers, deadline)) return false;
    const std::uint64_t seq = at(s.seq).load(std::memory_order_acquire);
    if (seq <= chunk) throw ChannelClosed(closed_reason());  // closed, and nothing more came
    if (seq != chunk + 1)
      fail("slot " + std::to_string(chunk % slots_) + " holds chunk " + std::to_string(seq - 1) +
           " where chunk " + std::to_string(chunk) + " was expected");
    // The writer leaves the slot alone until we acknowledge it: these reads are stable.
    const std::uint64_t total = s.total, offset = s.offset, length = s.length;
    const std::uint64_t chunk_tag = s.tag;
    const auto where = [&] { return "chunk " + std::to_string(chunk); };
    if (total > options_.max_object_bytes)
      fail(where() + " announces an object of " + std::to_string(total) +
           " bytes, beyond the limit of " + std::to_string(options_.max_object_bytes));
    if (offset > total || length != std::min<std::uint64_t>(slot_bytes_, total - offset))
      fail(where() + " carries bytes " + std::to_string(offset) + "+" + std::to_string(length) +
           " of an object of " + std::to_string(total));
    if (offset == 0) {
      // A new object; one that was begun and never finished (the writer timed out) is dropped.
      assembling_ = true;
      assembling_tag_ = chunk_tag;
      assembled_ = 0;
      object_.resize(static_cast<std::size_t>(total));
    } else if (!assembling_ || chunk_tag != assembling_tag_ || offset != assembled_ ||
               total != object_.size()) {
      fail(where() + " continues an object (tag " + std::to_string(chunk_tag) + ", byte " +
           std::to_string(offset) + ") that did not begin before it");
    }
    if (length > 0) std::memcpy(object_.data() + offset, s.data, static_cast<std::size_t>(length));
    assembled_ = static_cast<std::size_t>(offset + length);
    at(control_->reader[reader_].acked).store(chunk + 1, std::memory_order_release);
    shm::notify(control_->ack_epoch, control_->ack_sleepers);
    expected_ = chunk + 1;
    if (assembled_ == object_.size()) {
      assembling_ = false;
      tag = assembling_tag_;
      out.swap(object_);
      return true;
    }
  }
}

}  // namespace rankmesh
