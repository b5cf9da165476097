// RankContext: one rank's side of the data plane, made of one part per concept —
//   PeerLinks       its channels to every peer, where the peers are, and its failure state;
//   FrameStash      frames that arrived before their receive (fed to the matcher by recv());
//   LayoutEpochs    which group ids are current (group_ids.hpp);
//   BroadcastRings  shared-memory broadcast rings to same-node peers;
//   RankStreams     its stream per device;
//   OpQueue         its asynchronous operations, in issue order on the host stream;
//   OpHistory       its recent messages, logged with the error when an operation fails;
//   GroupFailures   its groups that failed as a whole (fail_group / group_failed).
// Used by the rank's GroupCoordinators; CAF-free.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "channel.hpp"
#include "rank/broadcast_rings.hpp"
#include "rank/frame_stash.hpp"
#include "rank/group_failures.hpp"
#include "rank/group_ids.hpp"
#include "rank/op_history.hpp"
#include "rank/op_queue.hpp"
#include "rank/tracer.hpp"
#include "rank/peer_links.hpp"
#include "rank/streams.hpp"
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

  using Locality = PeerLocality;
  // See PeerLinks::connect.
  void connect(std::vector<std::shared_ptr<Channel>> outbound,
               std::vector<std::shared_ptr<Channel>> inbound, Locality locality = {}) {
    links_.connect(std::move(outbound), std::move(inbound), std::move(locality));
  }
  bool same_node(int rank) const noexcept { return links_.same_node(rank); }
  bool shares_memory_with(int rank) const noexcept { return links_.shares_memory_with(rank); }
  // Whether device tensors to other processes of this node travel as exported device memory
  // (CUDA IPC, device_ipc.hpp) instead of staged through host memory: RANKMESH_CUDA_IPC=1 when
  // the rank was made. Opt-in until the path has run on a GPU host.
  bool device_ipc() const noexcept { return device_ipc_; }

  static std::uint32_t group_id(GroupKind kind, int index, std::uint32_t epoch) {
    return rankmesh::group_id(kind, index, epoch);
  }
  std::uint32_t begin_layout_epoch() noexcept { return epochs_.begin(); }
  std::uint32_t layout_epoch() const noexcept { return epochs_.current(); }

  int rank() const noexcept { return rank_; }
  int world_size() const noexcept { return world_size_; }
  int local_rank() const noexcept { return local_rank_; }
  std::chrono::nanoseconds default_timeout() const noexcept { return timeout_; }
  Tensor allocate(const Shape& shape, DType dtype) const { return allocator_(shape, dtype); }
  const Allocator& allocator() const noexcept { return allocator_; }

  // The parts the coordinator uses on their own.
  PeerLinks& links() noexcept { return links_; }
  BroadcastRings& broadcast_rings() noexcept { return rings_; }

  using Describe = PeerLinks::Describe;
  // Hands a frame to global rank `dst`; false where it could not (PeerLinks::try_send).
  bool try_send(int dst, Frame& frame, Deadline start_by, Deadline deadline, const Describe& what,
                std::string& why) {
    return links_.try_send(dst, frame, start_by, deadline, what, why);
  }
  // The next frame from global rank `src` for `group` and message class (point-to-point or
  // collective): from the stash if one is kept, else from the channel, where frames for other
  // groups or classes are stashed for their own receive. Returns false at the deadline; throws
  // Error(peer_failed) once the channel is closed. `landing`: where the payloads of one
  // expected frame should go (Channel::land). A peer beyond the stash's bound has the channel
  // from it closed and the receive fails with an Error(limit_exceeded) naming it.
  bool recv(int src, std::uint32_t group, bool collective, Frame& out, Deadline deadline,
            const Describe& what, const Landing* landing = nullptr);
  // Returns a frame that recv() gave out to the front of the stash: the next recv() for its
  // group and class gets it again.
  void put_back(int src, Frame&& frame) { stash_.keep(src, std::move(frame), true); }
  static constexpr std::size_t kMaxStashedFrames = FrameStash::kMaxFrames;
  static constexpr std::size_t kMaxStashedBytes = FrameStash::kMaxBytes;

  DeviceBackend& backend_for(const Device& device) { return streams_.backend_for(device); }
  DeviceBackend* backend_of_type(DeviceType type) const noexcept {
    return streams_.backend_of_type(type);
  }
  Stream& stream_for(const Device& device) { return streams_.stream_for(device); }
  // Waits, until the deadline, for the copies queued on this rank's streams.
  void synchronize_streams(Deadline deadline) { streams_.synchronize(deadline); }

  // Runs `work` on this rank's host stream, after all work submitted before it. The work keeps
  // the context alive until it has run.
  void submit(std::function<void()> work) {
    queue_.submit(streams_.stream_for(Device{}), shared_from_this(), std::move(work));
  }
  // Waits until everything submitted has run (blocking calls keep issue order this way). A
  // no-op inside submitted work. Copies on the streams are not waited for: they are ordered by
  // their events.
  void drain(Deadline deadline) { queue_.drain(deadline); }

  // Closes every channel and broadcast ring: pending and later operations of this rank fail
  // with `reason`.
  void fail(const std::string& reason);
  // Notes `reason` as this rank's failure before fail() closes anything (PeerLinks).
  void record_failure(const std::string& reason) { links_.record_failure(reason); }
  // Why the rank failed; empty while it has not.
  std::string failure() const { return links_.failure(); }

  // --- one group failing as a whole (issue 13, collective consensus; rank/group_failures.hpp).
  // How fail_group() tells the other members: (group id, their global ranks, reason), handed to
  // the rank's actor, which relays it through the control plane (runtime.cpp). Set once, before
  // the rank's operations start; without one, fail_group() fails the group here only.
  using GroupNotifier =
      std::function<void(std::uint32_t group, std::vector<int> members, std::string reason)>;
  void set_group_notifier(GroupNotifier notifier) { group_notifier_ = std::move(notifier); }
  // Fails group `group` (its id, GroupState::id) here with `reason` and tells every other member
  // (`members`: global ranks, this rank included or not) through the control plane, so that their
  // pending and later operations on that group fail with the reason. Never blocks; never throws.
  // A group that had failed already (here or by a notice) keeps its first reason and is not
  // announced again.
  void fail_group(std::uint32_t group, const std::vector<int>& members,
                  const std::string& reason) noexcept;
  // The receiving side: another member failed group `group` with `reason` (called by the rank
  // actor, on its own thread). True when this is news here. Receives waiting on the group notice
  // it within a slice of their wait (coordinator/watchdog.cpp).
  bool group_failed(std::uint32_t group, const std::string& reason) noexcept;
  // The reason group `group` failed (here or by a notice); empty while it stands. One relaxed
  // atomic load while no group of this rank ever failed: receives call it.
  std::string group_failure(std::uint32_t group) const { return group_failures_.reason(group); }
  // Whether any group of this rank ever failed: one relaxed load, for paths that must not build
  // even an empty string while none has (Call's constructor).
  bool any_group_failed() const noexcept { return group_failures_.any(); }

  void record(std::uint32_t op, const OpHistory::GroupLabel& group, int peer, bool sent,
              std::uint64_t seq, std::size_t bytes) noexcept {
    history_.record(op, group, peer, sent, seq, bytes);
  }
  void log(const std::string& line) const { history_.log(line); }
  // The newest message received from global rank `peer` in the history (OpHistory::last_from).
  std::string last_from(int peer) const { return history_.last_from(peer); }
  // The fraction of an operation's timeout after which a receive still waiting logs who it
  // waits for (coordinator/watchdog.hpp); 0 or 1 and above: never.
  void set_watchdog(double fraction) noexcept { watchdog_ = fraction; }
  double watchdog() const noexcept { return watchdog_; }
  Error reported(Error error) const { return history_.reported(std::move(error)); }

  // A frame whose buffers this rank reuses for its sends and receives (ops are serialised).
  Frame& scratch() noexcept { return scratch_; }
  // The tensors of the dict being sent, as the encoder lists them (send_tensor_dict), kept so
  // that their room is reused.
  std::vector<const Tensor*>& dict_tensors() noexcept { return dict_tensors_; }
  // The tensors of a dict handed over whole in one process, to be replaced by the peer's copies.
  std::vector<Tensor*>& dict_leaves() noexcept { return dict_leaves_; }

  // The rank's timeline recording (rank/tracer.hpp).
  Tracer& tracer() const noexcept { return *tracer_; }
  const std::shared_ptr<Tracer>& tracer_handle() const noexcept { return tracer_; }
  // Whether the calling thread runs this rank's asynchronous operations (its stream thread).
  bool on_stream_thread() const noexcept { return queue_.running_here(); }

private:
  const int rank_;
  const int world_size_;
  const int local_rank_;
  const std::chrono::nanoseconds timeout_;
  const bool device_ipc_ = [] {
    const char* on = std::getenv("RANKMESH_CUDA_IPC");
    return on != nullptr && std::string_view(on) == "1";
  }();
  Allocator allocator_;
  const std::shared_ptr<Tracer> tracer_;
  double watchdog_ = 0.5;
  OpHistory history_;
  PeerLinks links_;
  LayoutEpochs epochs_;
  FrameStash stash_;
  GroupFailures group_failures_;
  GroupNotifier group_notifier_;
  BroadcastRings rings_;
  OpQueue queue_;
  Frame scratch_;
  std::vector<const Tensor*> dict_tensors_;
  std::vector<Tensor*> dict_leaves_;
  // Declared last: destroyed first, so work still queued on them finds the rest alive.
  RankStreams streams_;
};

}  // namespace rankmesh
