// Test support: the ranks of a world in one process, each with its own RankContext, joined by
// the transport a test chooses per pair — one for pairs on one node, one for the others — and
// placed on the nodes it chooses (what multi-process worlds learn from the environment). The
// ranks connect through the transports' own endpoints, as a runtime's do. GroupCoordinators are
// built over the contexts directly, so one test can run the same sequence over every transport.
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
#include "inproc/inproc_transport.hpp"
#include "local_exchange.hpp"
#include "rankmesh/group_coordinator.hpp"
#include "shm/shm_transport.hpp"
#include "tcp/tcp_transport.hpp"
#include "transport_table.hpp"

namespace rankmesh::test {

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
  void send(Frame& frame, Deadline start_by, Deadline deadline) override {
    std::size_t bytes = 0;
    for (const Tensor& t : frame.tensors) bytes += t.nbytes();
    const std::uint32_t op = frame.header.op;
    inner_->send(frame, start_by, deadline);
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

class RankWorld {
public:
  // `node_of[r]`: rank r's node. Pairs on one node are joined by `same_node`, the others by
  // `across_nodes`. `timeout`: every rank's default operation timeout.
  RankWorld(std::vector<int> node_of, const Transport& same_node, const Transport& across_nodes,
            std::chrono::nanoseconds timeout)
      : node_of_(std::move(node_of)) {
    const int n = size();
    const auto at = [](int r) { return static_cast<std::size_t>(r); };
    std::vector<std::vector<std::shared_ptr<Channel>>> out(at(n), std::vector<std::shared_ptr<Channel>>(at(n)));
    std::vector<std::vector<std::shared_ptr<Channel>>> in = out;
    connect(same_node, across_nodes, out, in);
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
                                         same_node.shares_memory_segments());
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

  // Every rank opens an endpoint of each transport and connects, on a thread of its own, to the
  // peers that transport carries (same node or not): out[r][peer], in[r][peer].
  void connect(const Transport& same_node, const Transport& across_nodes,
               std::vector<std::vector<std::shared_ptr<Channel>>>& out,
               std::vector<std::vector<std::shared_ptr<Channel>>>& in) {
    const int n = size();
    const auto at = [](int r) { return static_cast<std::size_t>(r); };
    std::vector<RankPlace> places;
    for (int r = 0; r < n; ++r)
      places.push_back(RankPlace{"node " + std::to_string(node_of_[at(r)]), "this process"});
    const Transport* transports[] = {&same_node, &across_nodes};
    LocalExchange exchange(n);
    std::vector<std::exception_ptr> failures(at(n));
    std::vector<std::thread> threads;
    for (int r = 0; r < n; ++r)
      threads.emplace_back([&, r] {
        try {
          TransportContext context;
          context.rank = r;
          context.world_size = n;
          context.secret = "rank world secret";
          context.allocator = [](const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype); };
          context.log = [](const std::string&) {};
          // One transport for both kinds of pair connects once, to every peer.
          const int kinds = &same_node == &across_nodes ? 1 : 2;
          for (int which = 0; which < kinds; ++which) {
            std::vector<int> peers;
            for (int peer = 0; peer < n; ++peer)
              if (peer != r && (kinds == 1 || (node_of_[at(peer)] == node_of_[at(r)]) == (which == 0)))
                peers.push_back(peer);
            // Connected links outlive the endpoint: once connect returns, every peer has its link.
            auto endpoint = transports[which]->open(context);
            const std::vector<ChannelPair> pairs = endpoint->connect(
                peers, places, exchange.rank(r), deadline_after(std::chrono::seconds(20)));
            for (std::size_t k = 0; k < peers.size(); ++k) {
              out[at(r)][at(peers[k])] = pairs[k].outbound;
              in[at(r)][at(peers[k])] = pairs[k].inbound;
            }
          }
        } catch (...) {
          failures[at(r)] = std::current_exception();
        }
      });
    for (auto& thread : threads) thread.join();
    for (auto& failure : failures)
      if (failure) std::rethrow_exception(failure);
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
