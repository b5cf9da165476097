// ShmPeers: one rank's shm channels to the peers of its node, each direction made when it is
// first used, so that start-up costs one inbox per rank (shm_inbox.hpp) and a rank's memory
// follows the peers it talks to. The receiving side always makes the segment (as an eager
// ShmChannel pair would): a first recv() makes it and offers it to the peer; a first send() asks
// the peer's inbox for it and waits (deadline, peer liveness) for the offer, which a thread
// answering this rank's inbox makes without the peer's application thread. Neither side ever
// waits for the other to connect a direction of its own, so first sends both ways at once cannot
// deadlock. The same thread attaches to a direction a peer offers before this rank sends on it,
// so that the first send finds it made.
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shm/shm_channel.hpp"
#include "shm/shm_inbox.hpp"
#include "transport.hpp"

namespace rankmesh {

class ShmPeers : public std::enable_shared_from_this<ShmPeers> {
public:
  // Makes this rank's inbox. Throws std::system_error.
  static std::shared_ptr<ShmPeers> create(const TransportContext& context);
  ~ShmPeers();

  // What the peers open this rank's inbox by (publish it through the Exchange).
  const std::string& inbox_name() const noexcept { return inbox_.name(); }
  // Channels to `peers` (global ranks, ascending), made on first use; `inboxes` holds every
  // rank's published inbox, by rank (its name carries the owner's pid: segments from that peer
  // are taken from that process alone). Starts answering this rank's inbox.
  std::vector<ChannelPair> connect(const std::vector<int>& peers,
                                   const std::vector<std::string>& inboxes);
  // Stops answering this rank's inbox (the last channel is gone, or a test plays a peer that
  // stopped answering); the channels made so far go on.
  void stop();

  // For the channels: the direction to or from `peer`, made now if it is not yet. A sender waits
  // for the peer's offer until `deadline` (ChannelTimeout) or the peer's death (ChannelClosed).
  ShmChannel& receiver(int peer);
  ShmChannel& sender(int peer, Deadline deadline);
  void close(int peer, bool receiving, const std::string& reason);
  // Makes and offers the direction from `peer` now, before it is received on (after a first
  // send: the answer needs it). Failures are left to the receive.
  void receive_ahead(int peer) noexcept;
  // Attaches now to the direction to `peer` if it has offered it (a send is coming; see the
  // definition). Failures are left to the send.
  void send_ahead(int peer) noexcept;
  int pid_of(int peer) const noexcept;
  ChannelTraits traits(bool receiving) const noexcept;

private:
  struct Peer;
  explicit ShmPeers(const TransportContext& context);
  Peer& at(int peer) const;
  ShmInbox& inbox_of(Peer& peer);
  void attach(Peer& peer, const std::string& segment);
  void answer();

  const TransportContext context_;
  ShmOptions options_;
  const std::uint64_t probe_word_;  // peers read it to learn whether they may read our memory
  ShmInbox inbox_;
  std::vector<std::unique_ptr<Peer>> peers_;  // by rank; null for ranks not reached through shm
  std::vector<int> ranks_;                    // the peers, ascending
  std::atomic<bool> stopping_{false};
  std::thread answering_;
};

}  // namespace rankmesh
