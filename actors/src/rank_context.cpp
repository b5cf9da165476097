#include "rank_context.hpp"

#include <algorithm>
#include <cstring>

#include "rankmesh/error.hpp"
#include "shm/shm_channel.hpp"

namespace rankmesh {

namespace {
// The rank whose submitted work this thread is running, if any.
thread_local const RankContext* t_running_for = nullptr;
}  // namespace

RankContext::RankContext(int rank, int world_size, int local_rank,
                         std::chrono::nanoseconds timeout, Allocator allocator,
                         std::vector<DeviceBackend*> backends,
                         std::function<void(const std::string&)> log)
    : rank_(rank), world_size_(world_size), local_rank_(local_rank), timeout_(timeout),
      allocator_(std::move(allocator)), backends_(std::move(backends)), log_(std::move(log)),
      stash_(static_cast<std::size_t>(world_size)) {}

void RankContext::connect(std::vector<std::shared_ptr<Channel>> outbound,
                          std::vector<std::shared_ptr<Channel>> inbound, Locality locality) {
  std::lock_guard lock(failure_mutex_);
  outbound_ = std::move(outbound);
  inbound_ = std::move(inbound);
  locality_ = std::move(locality);
  if (failure_.empty()) return;
  for (auto& channel : outbound_)
    if (channel) channel->close(failure_);
  for (auto& channel : inbound_)
    if (channel) channel->close(failure_);
}

namespace {
// A group id: kind in the top 4 bits, then 12 bits of layout epoch, then the group's index.
constexpr int kEpochShift = 16;
constexpr std::uint32_t kEpochMask = 0xFFF;
constexpr std::uint32_t kMaxGroupIndex = (std::uint32_t{1} << kEpochShift) - 1;

std::uint32_t epoch_of(std::uint32_t group) { return (group >> kEpochShift) & kEpochMask; }
}  // namespace

std::uint32_t RankContext::group_id(GroupKind kind, int index, std::uint32_t epoch) {
  if (index < 0 || static_cast<std::uint32_t>(index) > kMaxGroupIndex)
    throw Error(Errc::invalid_config, "group index " + std::to_string(index) + " of kind " +
                                          to_string(kind) + " is beyond the " +
                                          std::to_string(kMaxGroupIndex + 1) +
                                          " groups of a kind that frames can name");
  return (static_cast<std::uint32_t>(kind) << 28) | ((epoch & kEpochMask) << kEpochShift) |
         static_cast<std::uint32_t>(index);
}

std::uint32_t RankContext::begin_layout_epoch() noexcept {
  // Epoch 0 is the world group's; layouts count 1, 2, ... and wrap past 0.
  std::uint32_t next = (layout_epoch() + 1) & kEpochMask;
  if (next == 0) next = 1;
  layout_epoch_.store(next, std::memory_order_release);
  return next;
}

bool RankContext::stale(std::uint32_t group) const noexcept {
  // initialize_model_parallel agrees across ranks before any rank builds its groups, so a peer
  // is at most one epoch ahead: its frames for the next epoch wait; older ones have no receiver.
  const std::uint32_t epoch = epoch_of(group);
  const std::uint32_t current = layout_epoch();
  std::uint32_t ahead = (current + 1) & kEpochMask;
  if (ahead == 0) ahead = 1;
  return epoch != 0 && epoch != current && epoch != ahead;
}

namespace {

ShmBroadcastOptions ring_options(int writer, const std::function<void(const std::string&)>& log) {
  ShmBroadcastOptions options;
  // 8 slots of 256 KiB: a scheduler's step output fits one slot; larger objects stream
  // through. Objects are bounded like metadata on the channels, so that no object goes
  // through one transport that another would refuse.
  options.slots = 8;
  options.slot_bytes = std::size_t{256} << 10;
  options.max_object_bytes = std::size_t{16} << 20;
  options.writer_name = "rank " + std::to_string(writer);
  if (log) options.log = log;
  return options;
}

}  // namespace

std::shared_ptr<ShmBroadcastRing> RankContext::create_broadcast_ring(
    const std::vector<int>& readers, std::string& name) {
  ShmBroadcastOptions options = ring_options(rank_, log_);
  for (int reader : readers) options.reader_names.push_back("rank " + std::to_string(reader));
  ShmBroadcastRing::Created created =
      ShmBroadcastRing::create(static_cast<int>(readers.size()), std::move(options));
  name = created.name;
  std::shared_ptr<ShmBroadcastRing> ring = std::move(created.ring);
  std::lock_guard lock(failure_mutex_);
  if (!failure_.empty()) ring->close(failure_);
  std::erase_if(rings_, [](const auto& tracked) { return tracked.expired(); });
  rings_.push_back(ring);
  return ring;
}

std::shared_ptr<ShmBroadcastRing> RankContext::open_broadcast_ring(const std::string& name,
                                                                   int index, int writer) {
  ShmBroadcastOptions options = ring_options(writer, log_);
  // The writer is the process at the other end of our shm channel from it, whose pid that
  // channel checked against the one announced at join.
  const auto from = static_cast<std::size_t>(writer);
  if (from < inbound_.size())
    if (const auto* channel = dynamic_cast<const ShmChannel*>(inbound_[from].get()))
      options.writer_pid = channel->peer_pid();
  std::shared_ptr<ShmBroadcastRing> ring = ShmBroadcastRing::open(name, index, std::move(options));
  std::lock_guard lock(failure_mutex_);
  if (!failure_.empty()) ring->close(failure_);
  std::erase_if(rings_, [](const auto& tracked) { return tracked.expired(); });
  rings_.push_back(ring);
  return ring;
}

void RankContext::send(int dst, Frame& frame, Deadline deadline, const Describe& what) {
  try {
    outbound_[static_cast<std::size_t>(dst)]->send(frame, deadline);
  } catch (const ChannelTimeout&) {
    throw reported(Error(Errc::timeout, what() + ": rank " + std::to_string(dst) +
                                            " did not take the message before the deadline"));
  } catch (const ChannelClosed& closed) {
    throw reported(Error(Errc::peer_failed, what() + ": channel to rank " + std::to_string(dst) +
                                                " is closed: " + closed.what()));
  }
}

bool RankContext::released(int dst) noexcept {
  try {
    return outbound_[static_cast<std::size_t>(dst)]->wait_released(Clock::now());
  } catch (...) {
    return false;  // closed: nothing more is read from it, but neither is it released
  }
}

void RankContext::close_channel_to(int dst, const std::string& reason) {
  outbound_[static_cast<std::size_t>(dst)]->close(reason);
}

void RankContext::release(int dst, Deadline deadline, const Describe& what) {
  bool released;
  try {
    released = outbound_[static_cast<std::size_t>(dst)]->wait_released(deadline);
  } catch (const ChannelClosed& closed) {
    throw reported(Error(Errc::peer_failed, what() + ": channel to rank " + std::to_string(dst) +
                                                " is closed: " + closed.what()));
  }
  if (!released)
    throw reported(Error(Errc::timeout, what() + ": rank " + std::to_string(dst) +
                                            " did not take what was sent before the deadline"));
}

bool RankContext::recv(int src, std::uint32_t group, bool collective, Frame& out,
                       Deadline deadline, const Describe& what, const Landing* landing) {
  Stash& stash = stash_[static_cast<std::size_t>(src)];
  if (!stash.frames.empty()) {
    for (auto it = stash.frames.begin(); it != stash.frames.end();) {
      if (it->group == group && it->collective == collective) {
        out = std::move(it->frame);
        stash.bytes -= it->bytes;
        stash.frames.erase(it);
        return true;
      }
      if (stale(it->group)) {  // its group was rebuilt since: nobody will ask for it
        stash.bytes -= it->bytes;
        it = stash.frames.erase(it);
      } else {
        ++it;
      }
    }
  }
  Channel& channel = *inbound_[static_cast<std::size_t>(src)];
  struct Landed {  // the landing holds for this receive only
    Channel& channel;
    ~Landed() { channel.land(nullptr); }
  } landed{channel};
  channel.land(landing);
  while (true) {
    bool got;
    try {
      got = channel.recv(out, deadline);
    } catch (const ChannelClosed& closed) {
      throw reported(Error(Errc::peer_failed, what() + ": channel from rank " +
                                                  std::to_string(src) + " is closed: " +
                                                  closed.what()));
    }
    if (!got) return false;
    bool frame_collective = is_collective_op(out.header.op);
    if (out.header.group == group && frame_collective == collective) return true;
    // Another group's message (or the other class) overtook ours: keep it for its receive.
    if (!stale(out.header.group)) {
      if (stash.frames.size() >= kMaxStashedFrames || stash.bytes >= kMaxStashedBytes) {
        const std::string why =
            "rank " + std::to_string(src) + " sent more than " +
            std::to_string(stash.frames.size()) + " frames (" + std::to_string(stash.bytes) +
            " payload bytes) that no operation of rank " + std::to_string(rank_) +
            " has asked for yet; the groups' operations are issued in a different order on "
            "each side";
        inbound_[static_cast<std::size_t>(src)]->close(why);
        throw reported(Error(Errc::limit_exceeded, what() + ": " + why));
      }
      keep(src, std::move(out), false);
    }
    out = Frame{};
  }
}

void RankContext::keep(int src, Frame&& frame, bool front) {
  Stash& stash = stash_[static_cast<std::size_t>(src)];
  std::size_t bytes = 0;
  for (const Tensor& t : frame.tensors) bytes += t.nbytes();
  Stashed entry{frame.header.group, is_collective_op(frame.header.op), std::move(frame), bytes};
  if (front) {
    stash.frames.push_front(std::move(entry));
  } else {
    stash.frames.push_back(std::move(entry));
  }
  stash.bytes += bytes;
}

void RankContext::put_back(int src, Frame&& frame) { keep(src, std::move(frame), true); }

DeviceBackend& RankContext::backend_for(const Device& device) {
  if (device.type == DeviceType::cpu) return host_backend();
  for (DeviceBackend* backend : backends_)
    if (backend->device() == device) return *backend;
  throw Error(Errc::invalid_argument, "rank " + std::to_string(rank_) + ": no device backend for " +
                                          to_string(device) + " (pass it in RuntimeOptions::backends)");
}

Stream& RankContext::stream_for(const Device& device) {
  std::lock_guard lock(streams_mutex_);
  auto& stream = streams_[{static_cast<int>(device.type), device.index}];
  if (!stream) stream = backend_for(device).create_stream();
  return *stream;
}

void RankContext::submit(std::function<void()> work) {
  {
    std::lock_guard lock(async_mutex_);
    ++unfinished_;
  }
  stream_for(Device{}).enqueue([self = shared_from_this(), work = std::move(work)] {
    t_running_for = self.get();
    work();  // operations report their own errors through their handles: this never throws
    t_running_for = nullptr;
    std::lock_guard lock(self->async_mutex_);
    --self->unfinished_;
    self->async_done_.notify_all();
  });
}

void RankContext::drain(Deadline deadline) {
  if (t_running_for == this) return;
  std::unique_lock lock(async_mutex_);
  if (!async_done_.wait_until(lock, deadline, [&] { return unfinished_ == 0; }))
    throw Error(Errc::timeout, "rank " + std::to_string(rank_) +
                                   ": earlier asynchronous operations did not finish in time");
}

void RankContext::synchronize_streams(Deadline deadline) {
  std::vector<std::shared_ptr<Stream>> streams;
  {
    std::lock_guard lock(streams_mutex_);
    for (auto& entry : streams_) streams.push_back(entry.second);
  }
  for (auto& stream : streams)
    stream->synchronize(std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::max(Clock::duration::zero(), deadline - Clock::now())));
}

std::string RankContext::failure() const {
  std::lock_guard lock(failure_mutex_);
  return failure_;
}

void RankContext::record(std::uint32_t op, const std::string& group, int peer, bool sent,
                         std::uint64_t seq, std::size_t bytes) noexcept {
  OpRecord& r = history_[recorded_++ % kHistory];
  r.op = op;
  std::size_t n = std::min(group.size(), sizeof r.group - 1);
  std::memcpy(r.group, group.data(), n);
  r.group[n] = '\0';
  r.peer = peer;
  r.sent = sent;
  r.seq = seq;
  r.bytes = bytes;
}

Error RankContext::reported(Error error) const {
  std::string text = std::string(error.what()) + "\n  last operations of rank " +
                     std::to_string(rank_) + " (oldest first):";
  const std::uint64_t first = recorded_ > kHistory ? recorded_ - kHistory : 0;
  for (std::uint64_t i = first; i < recorded_; ++i) {
    const OpRecord& r = history_[i % kHistory];
    text += "\n    " + std::string(op_name(r.op)) + " #" + std::to_string(r.seq) + " on " +
            r.group + (r.sent ? ": sent " : ": received ") + std::to_string(r.bytes) +
            " payload bytes " + (r.sent ? "to" : "from") + " rank " + std::to_string(r.peer);
  }
  if (first == recorded_) text += " none";
  if (log_) log_(text);
  return error;
}

void RankContext::fail(const std::string& reason) {
  std::lock_guard lock(failure_mutex_);
  if (failure_.empty()) failure_ = reason;
  for (auto& tracked : rings_)
    if (auto ring = tracked.lock()) ring->close(reason);
  for (auto& channel : outbound_)
    if (channel) channel->close(reason);
  for (auto& channel : inbound_)
    if (channel) channel->close(reason);
}

}  // namespace rankmesh
