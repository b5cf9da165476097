// DataPlane: one process's channels to every other rank of a multi-process world — shm to ranks
// on the same node, tcp to the others (or one transport forced for the whole run). Built after
// the rendezvous, from the directory. CAF-free.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bootstrap/member.hpp"
#include "channel.hpp"
#include "tcp/tcp_channel.hpp"

namespace rankmesh {

class DataPlane {
public:
  struct Options {
    int rank = 0;
    int world_size = 1;
    std::string secret;
    std::string listen_address = "127.0.0.1";
    std::string transport = "auto";  // auto | shm | tcp
    Allocator allocator;
    std::function<void(const std::string&)> log;
    std::chrono::milliseconds failure_timeout{2000};
  };
  // Exchanges one value per rank through the registry (bootstrap/registry_exchange.hpp).
  using Exchange = std::function<std::vector<std::string>(const std::string& round,
                                                          const std::string& value)>;

  // Starts listening (tcp) at once, so the address can go into the join request.
  explicit DataPlane(Options options);
  ~DataPlane();
  DataPlane(const DataPlane&) = delete;
  DataPlane& operator=(const DataPlane&) = delete;

  std::string address() const;  // "host:port" where peers connect

  // Connects to every peer of the directory. Throws Error naming the peer that could not be
  // reached by the deadline.
  void connect(const std::vector<Member>& members, const std::string& node_id,
               const Exchange& exchange, Deadline deadline);

  // Channels by global rank (null for this rank itself).
  const std::vector<std::shared_ptr<Channel>>& outbound() const { return outbound_; }
  const std::vector<std::shared_ptr<Channel>>& inbound() const { return inbound_; }
  // By global rank: on this node; reached through shared memory.
  const std::vector<bool>& same_node() const { return same_node_; }
  const std::vector<bool>& shared_memory() const { return shared_memory_; }

private:
  bool use_shm(const Member& peer, const std::string& node_id) const;
  void connect_shm(const std::vector<Member>& members, const std::string& node_id,
                   const Exchange& exchange, Deadline deadline);
  void connect_tcp(const std::vector<Member>& members, const std::string& node_id,
                   Deadline deadline);

  Options options_;
  std::unique_ptr<TcpListener> listener_;
  std::mutex accepted_mutex_;
  std::condition_variable accepted_cv_;
  std::map<int, std::shared_ptr<TcpLink>> accepted_;  // by peer rank
  std::vector<std::shared_ptr<Channel>> outbound_;
  std::vector<std::shared_ptr<Channel>> inbound_;
  std::vector<bool> same_node_;
  std::vector<bool> shared_memory_;
};

}  // namespace rankmesh
