// Transport: one way ranks reach each other (inproc, shm, tcp, ...), behind one interface. A
// transport says how far it reaches and what its channels can do, and opens, for one rank, an
// endpoint that connects that rank to its peers through the bootstrap's Exchange. The runtime
// walks an ordered table of transports (transport_table.hpp) and gives each peer the first one
// that reaches it.
//
// A Transport is a description (one static object per kind); a TransportEndpoint is one rank's
// use of it: opened before the rank joins its world (so that a listener is up and its address
// known), connected once after the join with the peers the table gave it.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "channel.hpp"
#include "deadline.hpp"
#include "exchange.hpp"
#include "frame.hpp"

namespace rankmesh {

// How far a transport reaches, nearest first.
enum class Reach { same_process, same_node, any };

// Where one rank runs, as far as reaching it goes.
struct RankPlace {
  std::string node;     // node identity: equal for ranks that share memory and a kernel
  std::string process;  // equal for ranks in one process (unique across the world)
};

// Whether a transport of `reach` reaches `peer` from `self`.
inline bool reaches(Reach reach, const RankPlace& self, const RankPlace& peer) noexcept {
  switch (reach) {
    case Reach::same_process: return self.process == peer.process;
    case Reach::same_node: return self.node == peer.node;
    case Reach::any: return true;
  }
  return false;
}

// What a transport needs to know about the rank it serves, before and while connecting.
struct TransportContext {
  int rank = 0;
  int world_size = 1;
  std::string secret;                       // authenticates connections that leave the process
  std::string listen_address = "127.0.0.1"; // where a listening transport binds
  FrameLimits limits;                       // what its receivers accept in one frame
  Allocator allocator;                      // where received tensors land
  LogFn log;
};

// The two directions between this rank and one peer.
struct ChannelPair {
  std::shared_ptr<Channel> outbound;
  std::shared_ptr<Channel> inbound;
};

// One rank's use of a transport.
class TransportEndpoint {
public:
  virtual ~TransportEndpoint() = default;

  // What this rank listens at ("host:port"), or "" when it listens nowhere.
  virtual std::string address() const { return {}; }

  // Connects this rank to `peers` (global ranks, ascending) and returns their channels in that
  // order. Every rank of the world calls it, for the same transports in the same order, even
  // with no peers of its own, since it may take Exchange rounds (named after the transport) that
  // every rank must join. `places` holds every rank's place, by rank. Throws Error naming the
  // peer that could not be reached by the deadline. The channels outlive the endpoint (a
  // transport that makes them on first use keeps what that needs alive with them).
  virtual std::vector<ChannelPair> connect(const std::vector<int>& peers,
                                           const std::vector<RankPlace>& places,
                                           Exchange& exchange, Deadline deadline) = 0;
};

class Transport {
public:
  virtual ~Transport() = default;

  virtual std::string_view name() const noexcept = 0;
  virtual Reach reach() const noexcept = 0;
  // What its channels do with payloads: its receiving ends' traits (shares tensors, copies up
  // to N bytes, lands payloads, carries device memory).
  virtual ChannelTraits traits() const noexcept = 0;
  // Whether peers reached through it can map this rank's shared-memory segments (broadcast
  // rings ride on that).
  virtual bool shares_memory_segments() const noexcept { return false; }

  // The endpoint of the rank `context` describes. Throws Error(invalid_config) when it cannot
  // be opened (a listener that cannot bind).
  virtual std::unique_ptr<TransportEndpoint> open(const TransportContext& context) const = 0;
};

}  // namespace rankmesh
