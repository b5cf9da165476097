#include "data_plane.hpp"

#include "rankmesh/error.hpp"
#include "shm/shm_channel.hpp"

namespace rankmesh {
namespace {

std::pair<std::string, std::uint16_t> split_address(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos)
    throw Error(Errc::malformed, "data-plane address '" + address + "' has no port");
  return {address.substr(0, colon), static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1)))};
}

}  // namespace

DataPlane::DataPlane(Options options)
    : options_(std::move(options)),
      outbound_(static_cast<std::size_t>(options_.world_size)),
      inbound_(static_cast<std::size_t>(options_.world_size)),
      same_node_(static_cast<std::size_t>(options_.world_size), false),
      shared_memory_(static_cast<std::size_t>(options_.world_size), false) {
  TcpListenerOptions listen;
  listen.address = options_.listen_address;
  listen.secret = options_.secret;
  listen.self = PeerIdentity{options_.rank, options_.world_size};
  listen.link.allocator = options_.allocator;
  listen.link.log = options_.log;
  listener_ = std::make_unique<TcpListener>(listen, [this](std::shared_ptr<TcpLink> link) {
    const int peer = link->peer().rank;
    std::lock_guard lock(accepted_mutex_);
    if (peer <= options_.rank || accepted_.count(peer)) {
      // Lower ranks are dialled by this rank; a second link from one rank is not ours to keep.
      link->close("unexpected connection from rank " + std::to_string(peer));
      if (options_.log)
        options_.log("rankmesh: rank " + std::to_string(options_.rank) +
                     " dropped an unexpected data-plane connection from rank " + std::to_string(peer));
      return;
    }
    accepted_[peer] = std::move(link);
    accepted_cv_.notify_all();
  });
}

DataPlane::~DataPlane() {
  listener_->stop();
  for (auto& channel : outbound_)
    if (channel) channel->close("the runtime shut down");
  for (auto& channel : inbound_)
    if (channel) channel->close("the runtime shut down");
}

std::string DataPlane::address() const { return listener_->address(); }

bool DataPlane::use_shm(const Member& peer, const std::string& node_id) const {
  if (options_.transport == "tcp") return false;
  if (peer.node_id == node_id) return true;
  if (options_.transport == "shm")
    throw Error(Errc::invalid_config, "RANKMESH_TRANSPORT=shm, but rank " + std::to_string(peer.rank) +
                                          " is on another node (" + peer.node_id + ")");
  return false;
}

void DataPlane::connect(const std::vector<Member>& members, const std::string& node_id,
                        const Exchange& exchange, Deadline deadline) {
  for (const Member& peer : members)
    same_node_.at(static_cast<std::size_t>(peer.rank)) = peer.node_id == node_id;
  connect_shm(members, node_id, exchange, deadline);
  connect_tcp(members, node_id, deadline);
}

void DataPlane::connect_shm(const std::vector<Member>& members, const std::string& node_id,
                            const Exchange& exchange, Deadline deadline) {
  // Each rank creates the segments it receives through and publishes their names; every rank
  // takes part in the exchange, even with nothing to publish.
  ShmOptions shm;
  shm.allocator = options_.allocator;
  shm.log = options_.log;
  std::map<int, std::unique_ptr<ShmChannel>> receiving;
  std::string names;
  for (const Member& peer : members) {
    if (peer.rank == options_.rank || !use_shm(peer, node_id)) continue;
    shm.peer_name = "rank " + std::to_string(peer.rank);
    ShmChannel::Created created = ShmChannel::create(shm);
    names += std::to_string(peer.rank) + "=" + created.name + ";";
    receiving[peer.rank] = std::move(created.channel);
  }
  const std::vector<std::string> published = exchange("shm segments", names);
  const std::string mine = std::to_string(options_.rank) + "=";
  std::vector<ShmChannel*> receivers, senders;
  for (auto& [peer, channel] : receiving) {
    const std::string& theirs = published.at(static_cast<std::size_t>(peer));
    auto at = theirs.find(mine);
    while (at != std::string::npos && at != 0 && theirs[at - 1] != ';') at = theirs.find(mine, at + 1);
    if (at == std::string::npos)
      throw Error(Errc::invalid_config, "rank " + std::to_string(options_.rank) + ": rank " +
                                            std::to_string(peer) +
                                            " published no shared-memory segment for it "
                                            "(RANKMESH_TRANSPORT differs between ranks?)");
    const auto begin = at + mine.size();
    const std::string segment = theirs.substr(begin, theirs.find(';', begin) - begin);
    // The peer announced its pid with its segments: only that process may be at the other end
    // of either direction.
    shm.peer_name = "rank " + std::to_string(peer);
    shm.peer_pid = shm::creator_of(segment);
    std::shared_ptr<ShmChannel> out = ShmChannel::open(segment, shm);
    channel->expect_sender(shm.peer_pid);
    std::shared_ptr<ShmChannel> in = std::move(channel);
    receivers.push_back(in.get());
    senders.push_back(out.get());
    outbound_[static_cast<std::size_t>(peer)] = std::move(out);
    inbound_[static_cast<std::size_t>(peer)] = std::move(in);
    shared_memory_[static_cast<std::size_t>(peer)] = true;
  }
  // Receivers first: theirs only needs the senders attached (every rank opened its outbound
  // segments above), and a sender's handshake waits for its receiver's.
  receivers.insert(receivers.end(), senders.begin(), senders.end());
  for (ShmChannel* channel : receivers)
    if (!channel->wait_peer(deadline))
      throw Error(Errc::timeout, "rank " + std::to_string(options_.rank) +
                                     ": the shared-memory handshake with " +
                                     channel->name() + " did not finish in time");
}

void DataPlane::connect_tcp(const std::vector<Member>& members, const std::string& node_id,
                            Deadline deadline) {
  // The higher rank of a pair dials, the lower one accepts: one link per pair.
  TcpOptions link_options;
  link_options.allocator = options_.allocator;
  link_options.log = options_.log;
  std::vector<int> awaited;
  for (const Member& peer : members) {
    if (peer.rank == options_.rank || use_shm(peer, node_id)) continue;
    if (peer.rank > options_.rank) {
      awaited.push_back(peer.rank);
      continue;
    }
    auto [host, port] = split_address(peer.address);
    std::shared_ptr<TcpLink> link =
        tcp_connect(host, port, options_.secret, PeerIdentity{options_.rank, options_.world_size},
                    deadline, link_options);
    outbound_[static_cast<std::size_t>(peer.rank)] = std::shared_ptr<Channel>(link, &link->outbound());
    inbound_[static_cast<std::size_t>(peer.rank)] = std::shared_ptr<Channel>(link, &link->inbound());
  }
  std::unique_lock lock(accepted_mutex_);
  for (int peer : awaited) {
    if (!accepted_cv_.wait_until(lock, deadline, [&] { return accepted_.count(peer) != 0; }))
      throw Error(Errc::timeout, "rank " + std::to_string(options_.rank) + ": rank " +
                                     std::to_string(peer) + " did not connect its data plane in time");
    auto link = accepted_.at(peer);
    outbound_[static_cast<std::size_t>(peer)] = std::shared_ptr<Channel>(link, &link->outbound());
    inbound_[static_cast<std::size_t>(peer)] = std::shared_ptr<Channel>(link, &link->inbound());
  }
}

}  // namespace rankmesh
