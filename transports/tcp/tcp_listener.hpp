// TcpListener and tcp_connect: how tcp links come to be — accepted and authenticated on the
// listening side, connected and authenticated on the other.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "auth.hpp"
#include "tcp/tcp_link.hpp"

namespace rankmesh {
struct TcpListenerOptions {
  std::string address = "127.0.0.1";  // where to listen; "0.0.0.0" only when asked for
  std::uint16_t port = 0;             // 0: an ephemeral port (see TcpListener::port)
  // A socket already bound and listening, handed over by whoever chose the port (rankmesh
  // launch binds rank 0's registry port itself, so that no other process can take it between
  // the choice and the bind): used instead of binding `address`, and owned from then on (a
  // listener that throws leaves it to the caller). Its port must be `port` where that is not 0.
  int listening_fd = -1;
  std::string secret;
  PeerIdentity self;
  // How long an unauthenticated connection may take to prove the secret.
  std::chrono::nanoseconds handshake_timeout = std::chrono::seconds(2);
  // Connections authenticating at once. When a new one arrives with the pool full, the oldest
  // that has not yet proven the secret is dropped to make room: no connection is refused, so
  // outsiders holding every slot cannot keep a peer out (a peer dropped this way connects
  // again, see tcp_connect).
  std::size_t max_handshakes = 32;
  TcpOptions link;  // for the accepted links; its log serves the listener too
};

// Accepts connections on its own thread and authenticates each on a short-lived thread of its
// own, so a slow or hostile client delays no one. Authenticated links go to the callback;
// outsiders (wrong secret, garbage, silence past the handshake timeout, crowded out of the
// pool) are logged and dropped. The callback runs on a handshake thread; an exception from it
// drops that link (logged).
class TcpListener {
public:
  using OnLink = std::function<void(std::shared_ptr<TcpLink>)>;

  // Binds and starts accepting. Throws Error(invalid_config) when it cannot listen there.
  TcpListener(TcpListenerOptions options, OnLink on_link);
  ~TcpListener();
  TcpListener(const TcpListener&) = delete;
  TcpListener& operator=(const TcpListener&) = delete;

  std::uint16_t port() const noexcept;
  // "127.0.0.1:41234".
  std::string address() const;
  // Connections accepted whose handshake is still running and holds a slot of the pool.
  std::size_t handshakes_in_progress() const;

  // Stops accepting, abandons handshakes in progress and joins every thread, within a moment;
  // no callback runs once it has returned. Links already handed out stay open.
  void stop();

private:
  struct Impl;
  static void bind_and_listen(Impl& impl, const std::string& where);
  static void adopt_listening_socket(Impl& impl, const std::string& where);
  std::unique_ptr<Impl> impl_;
};

// Connects to a listener at host:port and authenticates as `self`. A failed connection attempt
// is retried until the deadline (the peer may not listen yet), and so is a handshake the
// listener dropped before it finished (it makes room for newer connections). Throws Error:
// timeout at the deadline, invalid_config for a host that does not resolve, and authenticate()'s
// refusals (mismatch, malformed).
std::shared_ptr<TcpLink> tcp_connect(const std::string& host, std::uint16_t port,
                                     std::string_view secret, PeerIdentity self,
                                     Deadline deadline, TcpOptions options = {});

}  // namespace rankmesh
