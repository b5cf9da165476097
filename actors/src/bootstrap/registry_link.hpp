// How the ranks of a multi-process world reach rank 0's registry: one authenticated tcp link per
// rank (the HMAC handshake of auth.hpp, then the control messages of control_codec.hpp), never
// CAF's middleman. Rank 0 runs a RegistryServer in front of its registry actor; every other rank
// a RegistryClient whose actor stands in for the registry (and for the leader) in its process.
// Whoever does not hold the secret gets no further than the handshake, and every message on a
// link is bound to the rank that link authenticated.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "deadline.hpp"

namespace rankmesh {

using LogLine = std::function<void(const std::string&)>;

struct RegistryLinkOptions {
  int rank = 0;
  int world_size = 1;
  std::string secret;
  // Unauthenticated connections get this long to finish the handshake.
  std::chrono::milliseconds handshake_timeout{2000};
  // How long writing one control message may take before its link counts as lost.
  std::chrono::milliseconds write_timeout{2000};
  LogLine log;
};

// Rank 0's side: accepts authenticated links on host:port and speaks for each linked rank to
// `registry` (as that rank's actor: the registry monitors it and sends it failures).
class RegistryServer {
public:
  // Throws Error(invalid_config) when it cannot listen there. `listening_fd`: a socket already
  // bound to host:port and listening (TcpListenerOptions::listening_fd), or -1 to bind here.
  RegistryServer(caf::actor_system& system, caf::actor registry, const std::string& host,
                 std::uint16_t port, int listening_fd, RegistryLinkOptions options);
  ~RegistryServer();
  RegistryServer(const RegistryServer&) = delete;

  // Once the world has left together: stops accepting links and waits until every member has
  // hung up (RegistryClient::hang_up, once it has the registry's answer to its leave) or the
  // deadline passes; returns the ranks still linked then. Rank 0 answers last, so it must close
  // last: closing first could drop an answer not yet written, and the member would report that
  // rank 0 did not answer.
  std::vector<int> wait_for_hang_ups(Deadline deadline);
  RegistryServer& operator=(const RegistryServer&) = delete;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Another rank's side: one link to rank 0's registry. Its actor answers what the registry actor
// answers (join_atom, exchange_atom, leave_atom, beat_atom) and the leader's check_atom, passes
// the rank's group failure notices (group_fail_atom) on, and forwards the registry's failure
// notices (the world's, a group's) to the rank actor named in the join. It exits when the
// link is lost, which its monitors see as the registry going away.
class RegistryClient {
public:
  // Connects and authenticates, retrying until `deadline` while rank 0 is not listening yet or
  // turns the connection away (e.g. all its handshake slots taken). Throws Error naming why.
  RegistryClient(caf::actor_system& system, const std::string& host, std::uint16_t port,
                 RegistryLinkOptions options, Deadline deadline);
  ~RegistryClient();
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  // The actor standing in for the registry (valid until hang_up).
  const caf::actor& registry() const noexcept;
  // Closes the link once the world has left together (RegistryServer::wait_for_hang_ups);
  // the destructor does the same.
  void hang_up();

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rankmesh
