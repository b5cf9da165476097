#include "bootstrap/registry_link.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "bootstrap/control_codec.hpp"
#include "bootstrap/control_messages.hpp"
#include "rankmesh/error.hpp"
#include "tcp/tcp_listener.hpp"

namespace rankmesh {
namespace {

// Set once the world has left together: links closing after that are no news.
using LeftFlag = std::shared_ptr<std::atomic<bool>>;

// Control messages are a few short lines: far below the data plane's limits.
TcpOptions control_link_options(const LogLine& log, const LeftFlag& left) {
  TcpOptions options;
  options.limits = FrameLimits{.max_metadata_bytes = std::size_t{1} << 20, .max_tensors = 0,
                               .max_payload_bytes = 0};
  options.log = [log, left](const std::string& line) {
    if (!left->load(std::memory_order_acquire) && log) log("rankmesh registry link: " + line);
  };
  return options;
}

// Writes one message; a link that cannot take it within `timeout` is closed (its reader then
// reports it lost).
void write_control(TcpLink& link, ControlMessage message, std::chrono::milliseconds timeout) {
  Frame frame;
  encode_control(message, frame);
  try {
    link.outbound().send(frame, deadline_after(timeout));
  } catch (const ChannelClosed&) {
    // Already closed: the reader reports why.
  } catch (const std::exception& error) {
    link.close(std::string("writing a control message failed: ") + error.what());
  }
}

// Reads the link until it closes, handing each message to `actor` as (control_atom, kind,
// request, fields) and finally (closed_atom, reason). A message that does not decode closes
// the link: a peer that holds the secret but speaks garbage is treated as lost.
void read_control(const std::shared_ptr<TcpLink>& link, const caf::actor& actor) {
  Frame frame;
  std::string reason;
  try {
    while (true) {
      if (!link->inbound().recv(frame, deadline_after(std::chrono::hours(1)))) continue;
      ControlMessage message = decode_control(frame);
      caf::anon_send(actor, control_atom::value, static_cast<std::uint32_t>(message.kind),
                     message.request, std::move(message.fields));
    }
  } catch (const ChannelClosed& closed) {
    reason = closed.what();
  } catch (const std::exception& error) {
    reason = "a malformed control message from " + link->peer_name() + ": " + error.what();
    link->close(reason);
  }
  caf::anon_send(actor, closed_atom::value, reason);
}

struct Linked {
  std::shared_ptr<TcpLink> link;
  caf::actor actor;
  std::thread reader;
};

// Closes every link, waits for its reader, stops its actor.
void shut_down(std::list<Linked>& links) {
  for (Linked& linked : links) linked.link->close("the runtime shut down");
  for (Linked& linked : links) {
    if (linked.reader.joinable()) linked.reader.join();
    caf::anon_send_exit(linked.actor, caf::exit_reason::user_shutdown);
  }
  links.clear();
}

std::vector<std::string> prepend(std::string first, std::vector<std::string> rest) {
  rest.insert(rest.begin(), std::move(first));
  return rest;
}

// Rank 0's stand-in for the rank at the other end of `link`: every request it makes to the
// registry or the leader names that rank, whatever the message said.
caf::behavior member_link(caf::event_based_actor* self, std::shared_ptr<TcpLink> link,
                          caf::actor registry, RegistryLinkOptions options, LeftFlag left) {
  struct State {
    caf::actor leader;
    std::set<std::uint32_t> logged;  // kinds already reported as unexpected
  };
  auto state = std::make_shared<State>();
  const int rank = link->peer().rank;
  auto reply = [=](ControlKind kind, std::uint64_t request, std::vector<std::string> fields) {
    write_control(*link, ControlMessage{kind, request, std::move(fields)}, options.write_timeout);
  };
  auto unavailable = [=](const caf::error& error) { return "rank 0: " + self->system().render(error); };
  return {
      [=](control_atom, std::uint32_t kind, std::uint64_t request, std::vector<std::string> fields) {
        switch (static_cast<ControlKind>(kind)) {
          case ControlKind::join: {
            int version = -1;
            const std::string& text = fields[0];
            std::from_chars(text.data(), text.data() + text.size(), version);
            self->request(registry, caf::infinite, join_atom::value, rank, options.world_size,
                          version, fields[1], fields[2], caf::actor_cast<caf::actor>(self))
                .then(
                    [=](const std::string& failure, std::vector<std::string> directory,
                        const caf::actor& leader) {
                      state->leader = leader;
                      reply(ControlKind::joined, request, prepend(failure, std::move(directory)));
                    },
                    [=](const caf::error& error) { reply(ControlKind::joined, request, {unavailable(error)}); });
            return;
          }
          case ControlKind::exchange:
            self->request(registry, caf::infinite, exchange_atom::value, fields[0], rank, fields[1])
                .then(
                    [=](const std::string& failure, std::vector<std::string> values) {
                      reply(ControlKind::exchanged, request, prepend(failure, std::move(values)));
                    },
                    [=](const caf::error& error) { reply(ControlKind::exchanged, request, {unavailable(error)}); });
            return;
          case ControlKind::leave:
            self->request(registry, caf::infinite, leave_atom::value, rank)
                .then(
                    [=](const std::string& failure) {
                      if (failure.empty()) left->store(true, std::memory_order_release);
                      reply(ControlKind::left, request, {failure});
                    },
                    [=](const caf::error& error) { reply(ControlKind::left, request, {unavailable(error)}); });
            return;
          case ControlKind::beat:
            self->request(registry, caf::infinite, beat_atom::value, rank)
                .then([=](std::int64_t clock_ns) {
                        reply(ControlKind::beat_ack, request, {std::to_string(clock_ns)});
                      },
                      [=](const caf::error&) {});
            return;
          case ControlKind::propose:
            if (!state->leader) {
              reply(ControlKind::verdict, request, {"rank " + std::to_string(rank) + " proposed before joining"});
              return;
            }
            self->request(state->leader, caf::infinite, check_atom::value, rank, fields[0])
                .then([=](const std::string& verdict) { reply(ControlKind::verdict, request, {verdict}); },
                      [=](const caf::error& error) { reply(ControlKind::verdict, request, {unavailable(error)}); });
            return;
          case ControlKind::group_fail:
            try {
              GroupNotice notice = decode_group_notice(
                  ControlMessage{ControlKind::group_fail, request, std::move(fields)});
              self->send(registry, group_fail_atom::value, rank, notice.group,
                         std::move(notice.members), std::move(notice.reason));
            } catch (const Error& error) {
              // Refused; the link and the world stand. Reported once per link.
              if (state->logged.insert(kind).second && options.log)
                options.log("rankmesh registry: refused a group failure notice from rank " +
                            std::to_string(rank) + ": " + error.what() +
                            " (later refusals from it are not reported)");
            }
            return;
          default:
            if (state->logged.insert(kind).second && options.log)
              options.log("rankmesh registry: rank " + std::to_string(rank) + " sent a '" +
                          to_string(static_cast<ControlKind>(kind)) +
                          "' message, which only rank 0 sends; dropped (reported once)");
        }
      },
      [=](fail_atom, const std::string& reason) { reply(ControlKind::fail, 0, {reason}); },
      [=](group_failed_atom, std::uint32_t group, const std::string& reason) {
        ControlMessage message = encode_group_failed(group, reason);
        write_control(*link, std::move(message), options.write_timeout);
      },
      [=](closed_atom, const std::string&) { self->quit(); },
  };
}

// Another rank's stand-in for the registry and the leader: each request becomes a control
// message, answered when the reply with its id comes back.
caf::behavior registry_proxy(caf::event_based_actor* self, std::shared_ptr<TcpLink> link,
                             RegistryLinkOptions options, LeftFlag left) {
  struct Pending {
    ControlKind answer;  // the kind of reply expected
    caf::response_promise promise;
  };
  struct State {
    std::uint64_t next_request = 1;
    std::map<std::uint64_t, Pending> pending;
    caf::actor rank_actor;  // where failure notices go
  };
  auto state = std::make_shared<State>();
  auto ask = [=](ControlKind kind, ControlKind answer, std::vector<std::string> fields) {
    const std::uint64_t request = state->next_request++;
    state->pending.emplace(request, Pending{answer, self->make_response_promise()});
    write_control(*link, ControlMessage{kind, request, std::move(fields)}, options.write_timeout);
  };
  return {
      [=](join_atom, int, int, int version, const std::string& node_id, const std::string& address,
          const caf::actor& rank_actor) {
        state->rank_actor = rank_actor;
        ask(ControlKind::join, ControlKind::joined, {std::to_string(version), node_id, address});
      },
      [=](exchange_atom, const std::string& round, int, const std::string& value) {
        ask(ControlKind::exchange, ControlKind::exchanged, {round, value});
      },
      [=](leave_atom, int) { ask(ControlKind::leave, ControlKind::left, {}); },
      [=](beat_atom, int) { ask(ControlKind::beat, ControlKind::beat_ack, {}); },
      [=](check_atom, int, const std::string& proposal) {
        ask(ControlKind::propose, ControlKind::verdict, {proposal});
      },
      [=](group_fail_atom, int, std::uint32_t group, std::vector<int> members, std::string reason) {
        write_control(*link, encode_group_fail(GroupNotice{group, std::move(reason), std::move(members)}),
                      options.write_timeout);
      },
      [=](control_atom, std::uint32_t kind_number, std::uint64_t request, std::vector<std::string> fields) {
        const auto kind = static_cast<ControlKind>(kind_number);
        if (kind == ControlKind::fail) {
          if (state->rank_actor) self->send(state->rank_actor, fail_atom::value, fields[0]);
          return;
        }
        if (kind == ControlKind::group_failed) {
          try {
            GroupNotice notice = decode_group_notice(ControlMessage{kind, request, std::move(fields)});
            if (state->rank_actor)
              self->send(state->rank_actor, group_failed_atom::value, notice.group, std::move(notice.reason));
          } catch (const Error& error) {
            if (options.log)
              options.log("rankmesh: rank " + std::to_string(options.rank) +
                          " dropped a group failure notice from rank 0: " + error.what());
          }
          return;
        }
        auto it = state->pending.find(request);
        if (it == state->pending.end() || it->second.answer != kind) {
          if (options.log)
            options.log("rankmesh: rank " + std::to_string(options.rank) + " dropped a '" +
                        to_string(kind) + "' message from rank 0 that answers nothing it asked");
          return;
        }
        caf::response_promise promise = std::move(it->second.promise);
        state->pending.erase(it);
        switch (kind) {
          case ControlKind::joined:
            promise.deliver(fields[0], std::vector<std::string>(fields.begin() + 1, fields.end()),
                            caf::actor_cast<caf::actor>(self));
            break;
          case ControlKind::exchanged:
            promise.deliver(fields[0], std::vector<std::string>(fields.begin() + 1, fields.end()));
            break;
          case ControlKind::beat_ack: {
            // Rank 0's clock; a value that does not parse only costs this clock sample (-1).
            std::int64_t clock_ns = -1;
            const std::string& text = fields[0];
            const auto parsed = std::from_chars(text.data(), text.data() + text.size(), clock_ns);
            if (parsed.ec != std::errc() || parsed.ptr != text.data() + text.size()) clock_ns = -1;
            promise.deliver(clock_ns);
            break;
          }
          case ControlKind::left:
            if (fields[0].empty()) left->store(true, std::memory_order_release);
            promise.deliver(fields[0]);
            break;
          default: promise.deliver(fields[0]); break;  // verdict
        }
      },
      [=](closed_atom, const std::string& reason) {
        for (auto& [request, pending] : state->pending)
          pending.promise.deliver(caf::make_error(caf::sec::request_receiver_down, reason));
        state->pending.clear();
        self->quit(caf::exit_reason::remote_link_unreachable);
      },
  };
}

}  // namespace

struct RegistryServer::Impl {
  caf::actor_system& system;
  caf::actor registry;
  RegistryLinkOptions options;
  LeftFlag left = std::make_shared<std::atomic<bool>>(false);
  std::mutex mutex;
  std::list<Linked> links;
  std::unique_ptr<TcpListener> listener;
  // Told whenever a link's reader ends (its link has closed): wait_for_hang_ups waits on it.
  std::mutex hang_up_mutex;
  std::condition_variable hung_up;

  Impl(caf::actor_system& sys, caf::actor reg, RegistryLinkOptions opts)
      : system(sys), registry(std::move(reg)), options(std::move(opts)) {}
};

RegistryServer::RegistryServer(caf::actor_system& system, caf::actor registry,
                               const std::string& host, std::uint16_t port, int listening_fd,
                               RegistryLinkOptions options)
    : impl_(std::make_unique<Impl>(system, std::move(registry), std::move(options))) {
  TcpListenerOptions listen;
  listen.address = host;
  listen.port = port;
  listen.listening_fd = listening_fd;
  listen.secret = impl_->options.secret;
  listen.self = PeerIdentity{0, impl_->options.world_size};
  listen.handshake_timeout = impl_->options.handshake_timeout;
  listen.link = control_link_options(impl_->options.log, impl_->left);
  Impl& impl = *impl_;
  impl.listener = std::make_unique<TcpListener>(listen, [&impl](std::shared_ptr<TcpLink> link) {
    std::lock_guard lock(impl.mutex);
    // Links that have closed since (their readers are finishing) make room: a member that
    // reconnects again and again holds no more than its open links.
    for (auto it = impl.links.begin(); it != impl.links.end();) {
      if (!it->link->closed()) {
        ++it;
        continue;
      }
      it->reader.join();
      it = impl.links.erase(it);
    }
    Linked& linked = impl.links.emplace_back();
    linked.link = link;
    linked.actor = impl.system.spawn(member_link, link, impl.registry, impl.options, impl.left);
    try {
      linked.reader = std::thread([&impl, link, actor = linked.actor] {
        read_control(link, actor);
        { std::lock_guard hang_up(impl.hang_up_mutex); }
        impl.hung_up.notify_all();
      });
    } catch (...) {
      // No reader: the link is refused (the listener logs why), not kept open unread.
      link->close("rank 0 could not start a thread to read the link");
      caf::anon_send_exit(linked.actor, caf::exit_reason::user_shutdown);
      impl.links.pop_back();
      throw;
    }
  });
}

std::vector<int> RegistryServer::wait_for_hang_ups(Deadline deadline) {
  Impl& impl = *impl_;
  // Nobody joins a world that has left; with the acceptor stopped the list of links is fixed.
  impl.listener->stop();
  std::unique_lock lock(impl.hang_up_mutex);
  auto all_closed = [&] {
    return std::all_of(impl.links.begin(), impl.links.end(),
                       [](const Linked& linked) { return linked.link->closed(); });
  };
  impl.hung_up.wait_until(lock, deadline, all_closed);
  std::vector<int> linked;
  for (const Linked& l : impl.links)
    if (!l.link->closed()) linked.push_back(l.link->peer().rank);
  return linked;
}

RegistryServer::~RegistryServer() {
  impl_->listener->stop();
  std::lock_guard lock(impl_->mutex);
  shut_down(impl_->links);
}

struct RegistryClient::Impl {
  LeftFlag left = std::make_shared<std::atomic<bool>>(false);
  std::list<Linked> link;  // the one link (a list, to share shut_down)
};

RegistryClient::RegistryClient(caf::actor_system& system, const std::string& host,
                               std::uint16_t port, RegistryLinkOptions options, Deadline deadline)
    : impl_(std::make_unique<Impl>()) {
  std::shared_ptr<TcpLink> link;
  while (!link) {
    try {
      link = tcp_connect(host, port, options.secret, PeerIdentity{options.rank, options.world_size},
                         deadline, control_link_options(options.log, impl_->left));
    } catch (const Error& error) {
      // A wrong secret or identity stays wrong, and the deadline has passed on a timeout; a
      // connection turned away mid-handshake is tried again.
      if (error.code() == Errc::mismatch || error.code() == Errc::timeout ||
          error.code() == Errc::invalid_config || Clock::now() >= deadline)
        throw Error(error.code(), "rank " + std::to_string(options.rank) +
                                      " could not reach rank 0's registry at " + host + ":" +
                                      std::to_string(port) + ": " + error.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  Linked& linked = impl_->link.emplace_back();
  linked.link = link;
  linked.actor = system.spawn(registry_proxy, link, std::move(options), impl_->left);
  linked.reader = std::thread([link, actor = linked.actor] { read_control(link, actor); });
}

RegistryClient::~RegistryClient() { hang_up(); }

void RegistryClient::hang_up() { shut_down(impl_->link); }

const caf::actor& RegistryClient::registry() const noexcept { return impl_->link.front().actor; }

}  // namespace rankmesh
