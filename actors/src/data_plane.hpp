// DataPlane: one rank's channels to every other rank of its world, each peer through the first
// transport of the table that reaches it (transport_table.hpp), or through the one a run forces.
// Built before the rank joins (listeners are up, their address known), connected after, through
// the bootstrap's Exchange. CAF-free.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "channel.hpp"
#include "transport_table.hpp"

namespace rankmesh {

class DataPlane {
public:
  // Opens the endpoints of the transports this rank may need: `forced` ("auto" or a transport's
  // name) alone, else the table's up to the first that reaches every peer at most `farthest`
  // away. Throws Error(invalid_argument) for an unknown name.
  DataPlane(TransportContext context, const std::string& forced, Reach farthest,
            TransportTable table = transport_table());
  ~DataPlane();
  DataPlane(const DataPlane&) = delete;
  DataPlane& operator=(const DataPlane&) = delete;

  // Where peers connect ("host:port" of the first endpoint that listens), or "".
  std::string address() const;

  // Connects to every peer. `places`: every rank's place, by rank. Every rank of the world
  // calls it at once. Throws Error(invalid_config) when the ranks force different transports
  // or the forced one does not reach a peer, Error naming the peer that could not be reached by
  // the deadline.
  void connect(const std::vector<RankPlace>& places, Exchange& exchange, Deadline deadline);

  // Channels by global rank (null for this rank itself).
  const std::vector<std::shared_ptr<Channel>>& outbound() const { return outbound_; }
  const std::vector<std::shared_ptr<Channel>>& inbound() const { return inbound_; }
  // By global rank: on this node; reached through a transport whose peers map shared memory.
  const std::vector<bool>& same_node() const { return same_node_; }
  const std::vector<bool>& shared_memory() const { return shared_memory_; }

private:
  const TransportContext context_;
  const std::string forced_;
  std::vector<const Transport*> candidates_;
  std::vector<std::unique_ptr<TransportEndpoint>> endpoints_;  // by candidate
  std::vector<std::shared_ptr<Channel>> outbound_;
  std::vector<std::shared_ptr<Channel>> inbound_;
  std::vector<bool> same_node_;
  std::vector<bool> shared_memory_;
};

}  // namespace rankmesh
