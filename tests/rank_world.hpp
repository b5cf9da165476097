// Test support: the ranks of a world in one process, each with its own RankContext, joined by
// the transport a test chooses per pair — inproc, shm or tcp — and placed on the nodes it
// chooses (what multi-process worlds learn from the environment). GroupCoordinators are built
// over the contexts directly, so one test can run the same sequence over every transport.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../actors/src/coordinator/group_state.hpp"
#include "../actors/src/rank_context.hpp"
#include "inproc/inproc_channel.hpp"
#include "rankmesh/group_coordinator.hpp"
#include "shm/shm_channel.hpp"
#include "tcp/tcp_channel.hpp"

namespace rankmesh::test {

enum class Transport { inproc, shm, tcp };

// What one rank sent to another: each frame's operation and payload bytes, in order.
struct Sent {
  std::uint32_t op;
  std::size_t payload_bytes;
};

// A channel that notes what goes through it and passes everything on.
class NotingChannel final : public Channel {
public:
  explicit NotingChannel(std::shared_ptr<Channel> inner)
      : Channel(inner->traits()), inner_(std::move(inner)) {}
  void send(Frame& frame, Deadline deadline) override {
    std::size_t bytes = 0;
    for (const Tensor& t : frame.tensors) bytes += t.nbytes();
    const std::uint32_t op = frame.header.op;
    inner_->send(frame, deadline);
    std::lock_guard lock(mutex_);
    sent_.push_back(Sent{op, bytes});
  }
  bool recv(Frame& frame, Deadline deadline) override { return inner_->recv(frame, deadline); }
  void close(const std::string& reason) override { inner_->close(reason); }
  void land(const Landing* landing) noexcept override { inner_->land(landing); }
  bool wait_released(Deadline deadline) override { return inner_->wait_released(deadline); }
  std::vector<Sent> sent() const {
    std::lock_guard lock(mutex_);
    return sent_;
  }

private:
  std::shared_ptr<Channel> inner_;
  mutable std::mutex mutex_;
  std::vector<Sent> sent_;
};

inline const char* to_string(Transport transport) {
  switch (transport) {
    case Transport::inproc: return "inproc";
    case Transport::shm: return "shm";
    case Transport::tcp: return "tcp";
  }
  return "?";
}

class RankWorld {
public:
  // `node_of[r]`: rank r's node. Pairs on one node are joined by `same_node`, the others by
  // `across_nodes`. `timeout`: every rank's default operation timeout.
  RankWorld(std::vector<int> node_of, Transport same_node, Transport across_nodes,
            std::chrono::nanoseconds timeout)
      : node_of_(std::move(node_of)) {
    const int n = size();
    const auto at = [](int r) { return static_cast<std::size_t>(r); };
    std::vector<std::vector<std::shared_ptr<Channel>>> out(at(n), std::vector<std::shared_ptr<Channel>>(at(n)));
    std::vector<std::vector<std::shared_ptr<Channel>>> in = out;
    for (int a = 0; a < n; ++a)
      for (int b = a + 1; b < n; ++b) {
        const Transport transport = node_of_[at(a)] == node_of_[at(b)] ? same_node : across_nodes;
        connect_pair(transport, a, b, out[at(a)][at(b)], in[at(b)][at(a)], out[at(b)][at(a)],
                     in[at(a)][at(b)]);
      }
    noted_.assign(at(n), std::vector<std::shared_ptr<NotingChannel>>(at(n)));
    for (int from = 0; from < n; ++from)
      for (int to = 0; to < n; ++to)
        if (from != to)
          out[at(from)][at(to)] = noted_[at(from)][at(to)] =
              std::make_shared<NotingChannel>(out[at(from)][at(to)]);
    for (int r = 0; r < n; ++r) {
      auto context = std::make_shared<RankContext>(
          r, n, r, timeout, [](const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype); },
          std::vector<DeviceBackend*>{}, [this](const std::string& line) { note(line); });
      RankContext::Locality locality;
      for (int peer = 0; peer < n; ++peer) {
        locality.same_node.push_back(node_of_[at(peer)] == node_of_[at(r)]);
        locality.shared_memory.push_back(peer != r && node_of_[at(peer)] == node_of_[at(r)] &&
                                         same_node == Transport::shm);
      }
      context->connect(out[at(r)], in[at(r)], std::move(locality));
      contexts_.push_back(std::move(context));
    }
  }
  ~RankWorld() {
    for (auto& context : contexts_) context->fail("the test world shut down");
  }
  RankWorld(const RankWorld&) = delete;
  RankWorld& operator=(const RankWorld&) = delete;

  int size() const { return static_cast<int>(node_of_.size()); }
  std::shared_ptr<RankContext> context(int rank) const {
    return contexts_[static_cast<std::size_t>(rank)];
  }

  // Runs fn(rank) on a thread per rank; returns each rank's error text ("" if none).
  std::vector<std::string> run(const std::function<void(int)>& fn) const {
    std::vector<std::string> errors(static_cast<std::size_t>(size()));
    std::vector<std::thread> threads;
    for (int r = 0; r < size(); ++r)
      threads.emplace_back([&, r] {
        try {
          fn(r);
        } catch (const std::exception& e) {
          errors[static_cast<std::size_t>(r)] = std::string("error: ") + e.what();
        }
      });
    for (auto& thread : threads) thread.join();
    return errors;
  }

  // The frames rank `from` has sent to rank `to` so far.
  std::vector<Sent> sent(int from, int to) const {
    return noted_[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)]->sent();
  }

  // Every line the ranks logged, joined.
  std::string log() const {
    std::lock_guard lock(log_mutex_);
    return log_;
  }

private:
  void note(const std::string& line) {
    std::lock_guard lock(log_mutex_);
    log_ += line + "\n";
  }

  // Channels a -> b and b -> a: `a_out`/`b_in` carry a's frames, `b_out`/`a_in` b's.
  static void connect_pair(Transport transport, int a, int b, std::shared_ptr<Channel>& a_out,
                           std::shared_ptr<Channel>& b_in, std::shared_ptr<Channel>& b_out,
                           std::shared_ptr<Channel>& a_in) {
    const auto name = [](int r) { return "rank " + std::to_string(r); };
    switch (transport) {
      case Transport::inproc:
        a_out = b_in = std::make_shared<InprocChannel>();
        b_out = a_in = std::make_shared<InprocChannel>();
        return;
      case Transport::shm: {
        auto one_way = [&](int from, int to, std::shared_ptr<Channel>& sender,
                           std::shared_ptr<Channel>& receiver) {
          ShmOptions options;
          options.peer_name = name(from);
          options.log = [](const std::string&) {};
          ShmChannel::Created created = ShmChannel::create(options);
          options.peer_name = name(to);
          std::shared_ptr<ShmChannel> out = ShmChannel::open(created.name, options);
          std::shared_ptr<ShmChannel> in = std::move(created.channel);
          REQUIRE(in->wait_peer(deadline_after(std::chrono::seconds(10))));
          REQUIRE(out->wait_peer(deadline_after(std::chrono::seconds(10))));
          sender = std::move(out);
          receiver = std::move(in);
        };
        one_way(a, b, a_out, b_in);
        one_way(b, a, b_out, a_in);
        return;
      }
      case Transport::tcp: {
        const std::string secret = "rank world secret";
        const int world = 1 << 16;  // any size that holds both ranks
        std::mutex mutex;
        std::condition_variable arrived;
        std::shared_ptr<TcpLink> accepted;
        TcpListenerOptions listen;
        listen.secret = secret;
        listen.self = PeerIdentity{a, world};
        listen.link.log = [](const std::string&) {};
        TcpListener listener(listen, [&](std::shared_ptr<TcpLink> link) {
          std::lock_guard lock(mutex);
          accepted = std::move(link);
          arrived.notify_all();
        });
        TcpOptions options;
        options.log = [](const std::string&) {};
        std::shared_ptr<TcpLink> dialled = tcp_connect("127.0.0.1", listener.port(), secret,
                                                       PeerIdentity{b, world},
                                                       deadline_after(std::chrono::seconds(10)), options);
        {
          std::unique_lock lock(mutex);
          REQUIRE(arrived.wait_for(lock, std::chrono::seconds(10), [&] { return accepted != nullptr; }));
        }
        listener.stop();
        a_out = std::shared_ptr<Channel>(accepted, &accepted->outbound());
        a_in = std::shared_ptr<Channel>(accepted, &accepted->inbound());
        b_out = std::shared_ptr<Channel>(dialled, &dialled->outbound());
        b_in = std::shared_ptr<Channel>(dialled, &dialled->inbound());
        return;
      }
    }
  }

  std::vector<int> node_of_;
  std::vector<std::vector<std::shared_ptr<NotingChannel>>> noted_;  // [from][to]
  std::vector<std::shared_ptr<RankContext>> contexts_;
  mutable std::mutex log_mutex_;
  std::string log_;
};

// A flag one rank's thread raises and another waits on, with a deadline (no sleeps).
class Signal {
public:
  void raise() {
    {
      std::lock_guard lock(mutex_);
      raised_ = true;
    }
    changed_.notify_all();
  }
  bool wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return raised_; });
  }

private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool raised_ = false;
};

}  // namespace rankmesh::test
