// PeerLinks: one rank's channels to every other rank, where those ranks are, and whether the
// rank has failed. Channel errors stop here: what leaves is an Error(timeout) or
// Error(peer_failed) saying which operation was talking to whom.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "channel.hpp"
#include "rank/op_history.hpp"

namespace rankmesh {

// Where the other ranks are, by global rank. Empty: every rank runs in this process.
struct PeerLocality {
  std::vector<bool> same_node;      // on this rank's node
  std::vector<bool> shared_memory;  // reached through shared memory (shm channels)
};

class PeerLinks {
public:
  // What a failed message belonged to, asked only on failure (no string is built per message):
  // a reference to a callable the caller keeps alive (two words to pass; nothing to make or
  // destroy per message). Made from a named callable only: a temporary would be gone by the
  // time a failure asks.
  class Describe {
  public:
    template <class F>
      requires(!std::is_same_v<std::remove_cvref_t<F>, Describe>)
    Describe(const F& describe) noexcept  // implicit: callers pass their lambda as it is
        : object_(&describe),
          call_([](const void* object) { return (*static_cast<const F*>(object))(); }) {}
    template <class F>
      requires(!std::is_same_v<std::remove_cvref_t<F>, Describe>)
    Describe(const F&&) = delete;
    std::string operator()() const { return call_(object_); }

  private:
    const void* object_;
    std::string (*call_)(const void*);
  };

  explicit PeerLinks(const OpHistory& history) : history_(history) {}

  // Channels indexed by global rank (the entry for this rank itself is unused). Safe against a
  // fail() from another thread (the rank actor may learn of a failure while the data plane
  // connects): channels connected after a failure are closed at once with its reason.
  void connect(std::vector<std::shared_ptr<Channel>> outbound,
               std::vector<std::shared_ptr<Channel>> inbound, PeerLocality locality);
  bool same_node(int rank) const noexcept {
    const auto i = static_cast<std::size_t>(rank);
    return locality_.same_node.empty() || (i < locality_.same_node.size() && locality_.same_node[i]);
  }
  bool shares_memory_with(int rank) const noexcept {
    return static_cast<std::size_t>(rank) < locality_.shared_memory.size() &&
           locality_.shared_memory[static_cast<std::size_t>(rank)];
  }

  // Hands a frame to global rank `dst`: false where the channel had no room to begin it by
  // `start_by` (nothing sent: the caller may try again), or stopped taking it halfway until
  // `deadline` (then the channel has closed itself, and the next try says so);
  // Error(peer_failed), reported, once the channel is closed (Channel::send).
  // `why`: what the channel said when it returned false.
  bool try_send(int dst, Frame& frame, Deadline start_by, Deadline deadline, const Describe& what,
                std::string& why);
  // Error(timeout), reported: a message to rank `dst` was not sent before the call's deadline,
  // `why` (the last try's).
  Error not_sent(int dst, const Describe& what, const std::string& why) const;
  // The next frame from global rank `src`, its payloads landing where `landing` says (may be
  // null). False at the deadline; Error(peer_failed), reported, once the channel is closed.
  bool receive(int src, Frame& frame, Deadline deadline, const Describe& what,
               const Landing* landing);
  // What the channel to `dst` does with what it carries.
  const ChannelTraits& traits_to(int dst) const noexcept {
    return outbound_[static_cast<std::size_t>(dst)]->traits();
  }
  // Waits until the channel to `dst` reads nothing sent through it any more
  // (Channel::wait_released): false at `until` (waiting again later loses nothing); throws
  // Error(peer_failed) like send() once the channel is closed.
  bool wait_released(int dst, Deadline until, const Describe& what);
  // The error of a channel that did not let go before the operation's deadline.
  Error not_released(int dst, const Describe& what) const;
  // Whether the channel to `dst` holds nothing sent through it any more, without waiting.
  bool released(int dst) noexcept;
  // Closes one channel alone: the one to `dst` (its receives fail with `reason`), or the one
  // from `src`.
  void close_channel_to(int dst, const std::string& reason);
  void close_channel_from(int src, const std::string& reason);
  // The channel from `src`, for what only it knows (the shm peer's pid); null when none.
  const Channel* inbound(int src) const noexcept;

  // Closes every channel: pending and later messages fail with `reason`.
  void fail(const std::string& reason);
  // Notes `reason` as the failure without closing anything yet: ranks of one process that fail
  // together note it first, so that none reports a channel its peer closed instead of `reason`.
  void record_failure(const std::string& reason);
  // Why the rank failed; empty while it has not.
  std::string failure() const;

private:
  const OpHistory& history_;
  // Error(peer_failed) for a closed channel, saying this rank's failure where it has one.
  Error closed_error(const std::string& channel, const ChannelClosed& closed) const;

  mutable std::mutex failure_mutex_;
  std::string failure_;
  // Set once by connect() (under failure_mutex_, which fail() holds while closing them), read
  // without a lock by the operations, which start only once the rank is connected.
  std::vector<std::shared_ptr<Channel>> outbound_;
  std::vector<std::shared_ptr<Channel>> inbound_;
  PeerLocality locality_;
};

}  // namespace rankmesh
