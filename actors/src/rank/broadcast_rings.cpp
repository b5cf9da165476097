#include "rank/broadcast_rings.hpp"

#include <algorithm>

#include "shm/shm_broadcast.hpp"
#include "shm/shm_channel.hpp"

namespace rankmesh {
namespace {

ShmBroadcastOptions ring_options(int writer, const OpHistory::Log& log) {
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

// Runs `body` on a ring, its channel exceptions turned into reported Errors.
template <class Body>
auto through_ring(const OpHistory& history, const PeerLinks::Describe& what, Body body) {
  try {
    return body();
  } catch (const ChannelTimeout& e) {
    throw history.reported(Error(Errc::timeout, what() + ": " + e.what()));
  } catch (const ChannelClosed& e) {
    throw history.reported(Error(Errc::peer_failed, what() + ": " + e.what()));
  }
}

}  // namespace

RingWriter::RingWriter(std::shared_ptr<ShmBroadcastRing> ring, const OpHistory& history)
    : ring_(std::move(ring)), history_(history) {}
RingWriter::~RingWriter() = default;

void RingWriter::write(std::uint64_t tag, const std::uint8_t* data, std::size_t size,
                       Deadline deadline, const PeerLinks::Describe& what) {
  through_ring(history_, what, [&] { ring_->write(tag, data, size, deadline); });
}

bool RingWriter::wait_attached(Deadline deadline) { return ring_->wait_attached(deadline); }

RingReader::RingReader(std::shared_ptr<ShmBroadcastRing> ring, const OpHistory& history)
    : ring_(std::move(ring)), history_(history) {}
RingReader::~RingReader() = default;

bool RingReader::read(std::uint64_t& tag, std::vector<std::uint8_t>& bytes, Deadline deadline,
                      const PeerLinks::Describe& what) {
  return through_ring(history_, what, [&] { return ring_->read(tag, bytes, deadline); });
}

std::unique_ptr<RingWriter> BroadcastRings::create(const std::vector<int>& readers,
                                                   std::string& name) {
  ShmBroadcastOptions options = ring_options(rank_, history_.logger());
  for (int reader : readers) options.reader_names.push_back("rank " + std::to_string(reader));
  ShmBroadcastRing::Created created =
      ShmBroadcastRing::create(static_cast<int>(readers.size()), std::move(options));
  name = created.name;
  std::shared_ptr<ShmBroadcastRing> ring = std::move(created.ring);
  track(ring);
  return std::make_unique<RingWriter>(std::move(ring), history_);
}

std::unique_ptr<RingReader> BroadcastRings::open(const std::string& name, int index, int writer) {
  ShmBroadcastOptions options = ring_options(writer, history_.logger());
  // The writer is the process at the other end of our shm channel from it, whose pid that
  // channel checked against the one announced at join.
  if (const Channel* channel = links_.inbound(writer)) options.writer_pid = channel->peer_pid();
  std::shared_ptr<ShmBroadcastRing> ring = ShmBroadcastRing::open(name, index, std::move(options));
  track(ring);
  return std::make_unique<RingReader>(std::move(ring), history_);
}

void BroadcastRings::track(const std::shared_ptr<ShmBroadcastRing>& ring) {
  std::lock_guard lock(mutex_);
  if (!failure_.empty()) ring->close(failure_);
  std::erase_if(rings_, [](const auto& tracked) { return tracked.expired(); });
  rings_.push_back(ring);
}

void BroadcastRings::fail(const std::string& reason) {
  std::lock_guard lock(mutex_);
  if (failure_.empty()) failure_ = reason;
  for (auto& tracked : rings_)
    if (auto ring = tracked.lock()) ring->close(reason);
}

}  // namespace rankmesh
