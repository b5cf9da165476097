// RankContext: one rank's side of the data plane — its channels to every peer, the frames that
// arrived for operations not yet issued, its stream per device (copies and, on the host stream,
// its asynchronous operations, in issue order), and its failure state. Used by the rank's
// GroupCoordinators; CAF-free.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "channel.hpp"
#include "op_code.hpp"
#include "shm/shm_broadcast.hpp"
#include "rankmesh/device_backend.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/layout.hpp"
#include "rankmesh/tensor.hpp"

namespace rankmesh {

class RankContext : public std::enable_shared_from_this<RankContext> {
public:
  // `backends`: the non-host devices this rank may meet in tensors (the host is always known).
  // `log` receives the record of recent operations when one times out or loses a peer.
  RankContext(int rank, int world_size, int local_rank, std::chrono::nanoseconds timeout,
              Allocator allocator, std::vector<DeviceBackend*> backends,
              std::function<void(const std::string&)> log);

  // Where the other ranks are, by global rank. Empty: every rank runs in this process.
  struct Locality {
    std::vector<bool> same_node;      // on this rank's node
    std::vector<bool> shared_memory;  // reached through shared memory (shm channels)
  };
  // Channels indexed by global rank (the entry for this rank itself is unused). Safe against a
  // fail() from another thread (the rank actor may learn of a failure while the data plane
  // connects): channels connected after a failure are closed at once with its reason.
  void connect(std::vector<std::shared_ptr<Channel>> outbound,
               std::vector<std::shared_ptr<Channel>> inbound, Locality locality = {});
  bool same_node(int rank) const noexcept {
    const auto i = static_cast<std::size_t>(rank);
    return locality_.same_node.empty() || (i < locality_.same_node.size() && locality_.same_node[i]);
  }
  bool shares_memory_with(int rank) const noexcept {
    return static_cast<std::size_t>(rank) < locality_.shared_memory.size() &&
           locality_.shared_memory[static_cast<std::size_t>(rank)];
  }

  // Broadcast rings (shm_broadcast.hpp) towards same-node peers: one this rank writes to the
  // global ranks `readers` (its name for them goes into `name`), or one it reads as reader
  // `index` from global rank `writer`. fail() closes them like the channels. Throws what
  // ShmBroadcastRing's create() and open() throw.
  std::shared_ptr<ShmBroadcastRing> create_broadcast_ring(const std::vector<int>& readers,
                                                          std::string& name);
  std::shared_ptr<ShmBroadcastRing> open_broadcast_ring(const std::string& name, int index,
                                                        int writer);

  // Group ids: the kind, the group's index among its kind, and the layout epoch it belongs to,
  // so that a group rebuilt by a later initialize_model_parallel never takes a frame meant for
  // its predecessor. The world group lives in epoch 0 for the runtime's life.
  static std::uint32_t group_id(GroupKind kind, int index, std::uint32_t epoch);
  // Starts the next layout epoch (initialize_model_parallel, on every rank alike): frames of
  // the epoch before, stashed or late, are dropped from now on. Returns the new epoch.
  std::uint32_t begin_layout_epoch() noexcept;
  std::uint32_t layout_epoch() const noexcept { return layout_epoch_.load(std::memory_order_acquire); }

  int rank() const noexcept { return rank_; }
  int world_size() const noexcept { return world_size_; }
  int local_rank() const noexcept { return local_rank_; }
  std::chrono::nanoseconds default_timeout() const noexcept { return timeout_; }
  Tensor allocate(const Shape& shape, DType dtype) const { return allocator_(shape, dtype); }
  const Allocator& allocator() const noexcept { return allocator_; }

  // Hands a frame to global rank `dst`. Throws Error(timeout) or Error(peer_failed), with
  // `what` saying which operation was sending.
  // `what` is asked only on failure (no string is built per message).
  using Describe = std::function<std::string()>;
  void send(int dst, Frame& frame, Deadline deadline, const Describe& what);

  // The next frame from global rank `src` for `group` and message class (point-to-point or
  // collective); frames for other groups or classes wait for their own receive. Returns false
  // at the deadline; throws Error(peer_failed) once the channel is closed.
  // `landing`: where the payloads of one expected frame should go (Channel::land).
  // Frames that overtook their receive wait in a stash per source, bounded (kMaxStashedFrames,
  // kMaxStashedBytes): a peer beyond the bound closes the channel from it with an
  // Error(limit_exceeded) naming it.
  bool recv(int src, std::uint32_t group, bool collective, Frame& out, Deadline deadline,
            const Describe& what, const Landing* landing = nullptr);
  // Returns a frame that recv() gave out to the front of the stash: the next recv() for its
  // group and class gets it again.
  void put_back(int src, Frame&& frame);
  static constexpr std::size_t kMaxStashedFrames = 1024;
  static constexpr std::size_t kMaxStashedBytes = std::size_t{1} << 30;
  // What the channel to `dst` does with what it carries (ChannelTraits).
  const ChannelTraits& traits_to(int dst) const noexcept {
    return outbound_[static_cast<std::size_t>(dst)]->traits();
  }
  // Waits until the channel to `dst` reads nothing sent through it any more
  // (Channel::wait_released). Throws Error(timeout) or Error(peer_failed) like send().
  void release(int dst, Deadline deadline, const Describe& what);
  // Whether the channel to `dst` holds nothing sent through it any more, without waiting.
  bool released(int dst) noexcept;
  // Closes the channel to `dst` alone (its peer's receives fail with `reason`).
  void close_channel_to(int dst, const std::string& reason);

  // The backend of a device; Error(invalid_argument) for a device nobody registered.
  DeviceBackend& backend_for(const Device& device);
  // This rank's stream on a device, created on first use: copies of payloads run there.
  Stream& stream_for(const Device& device);

  // Runs `work` on this rank's host stream, after all work submitted before it. The work keeps
  // the context alive until it has run.
  void submit(std::function<void()> work);
  // Waits until everything submitted has run (blocking calls keep issue order this way). A
  // no-op inside submitted work. Copies on the streams are not waited for: they are ordered by
  // their events.
  void drain(Deadline deadline);

  // Waits, until the deadline, for the copies queued on this rank's streams.
  void synchronize_streams(Deadline deadline);

  // Closes every channel: pending and later operations of this rank fail with `reason`.
  void fail(const std::string& reason);
  // Why the rank failed; empty while it has not.
  std::string failure() const;

  // One message of an operation, kept in a short history so that a hang or a lost peer can be
  // diagnosed from the log.
  struct OpRecord {
    std::uint32_t op = 0;
    char group[16] = {};
    int peer = -1;  // global rank
    bool sent = false;
    std::uint64_t seq = 0;
    std::size_t bytes = 0;
  };
  void record(std::uint32_t op, const std::string& group, int peer, bool sent, std::uint64_t seq,
              std::size_t bytes) noexcept;
  // A line for the operator (the runtime's log).
  void log(const std::string& line) const {
    if (log_) log_(line);
  }
  // Logs `error` with the recent operations of this rank, and returns it for throwing.
  Error reported(Error error) const;

  // A frame whose buffers this rank reuses for its sends and receives (ops are serialised).
  Frame& scratch() noexcept { return scratch_; }

private:
  struct Stashed {
    std::uint32_t group;
    bool collective;
    Frame frame;
    std::size_t bytes;  // payload bytes
  };
  struct Stash {
    std::deque<Stashed> frames;
    std::size_t bytes = 0;
  };
  // Whether a frame of `group` belongs to a layout epoch that is over (dropped, not stashed).
  bool stale(std::uint32_t group) const noexcept;
  void keep(int src, Frame&& frame, bool front);  // into the stash, at its back or front

  const int rank_;
  const int world_size_;
  const int local_rank_;
  const std::chrono::nanoseconds timeout_;
  Allocator allocator_;
  std::vector<DeviceBackend*> backends_;
  std::function<void(const std::string&)> log_;
  static constexpr std::size_t kHistory = 16;
  std::array<OpRecord, kHistory> history_{};  // written by the thread running this rank's ops
  std::uint64_t recorded_ = 0;
  mutable std::mutex failure_mutex_;
  std::string failure_;
  // Set once by connect() (under failure_mutex_, which fail() holds while closing them), read
  // without a lock by the operations, which start only once the rank is connected.
  std::vector<std::shared_ptr<Channel>> outbound_;
  std::vector<std::shared_ptr<Channel>> inbound_;
  Locality locality_;
  std::vector<std::weak_ptr<ShmBroadcastRing>> rings_;  // guarded by failure_mutex_
  std::vector<Stash> stash_;  // by source global rank; used by the thread running the ops
  std::atomic<std::uint32_t> layout_epoch_{0};
  Frame scratch_;

  std::mutex async_mutex_;
  std::condition_variable async_done_;
  std::size_t unfinished_ = 0;  // submitted and not yet run

  std::mutex streams_mutex_;
  // Declared last: destroyed first, so work still queued on them finds the rest alive.
  std::map<std::pair<int, int>, std::shared_ptr<Stream>> streams_;  // by (device type, index)
};

}  // namespace rankmesh
