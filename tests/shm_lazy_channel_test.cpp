// Shm channels made on first use (shm_peers.hpp): the first message on a lazily made channel,
// a direction attached (and the way back made) ahead of its first send, first sends both ways at
// once (small, and far beyond the ring), channels that outlive their endpoint, a ring that grows
// under a stream of medium messages, and a peer that dies before the pair ever talked. Two ranks
// of one process each have their own ShmPeers and inbox, as two processes would.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "local_exchange.hpp"
#include "shm/shm_channel.hpp"
#include "shm/shm_peers.hpp"
#include "shm/shm_transport.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

namespace {

struct TwoRanks {
  std::shared_ptr<ShmPeers> peers[2];
  ChannelPair to[2];  // to[r]: rank r's channels to the other rank
  TwoRanks() {
    for (int r = 0; r < 2; ++r) {
      TransportContext context;
      context.rank = r;
      context.world_size = 2;
      peers[r] = ShmPeers::create(context);
    }
    const std::vector<std::string> inboxes{peers[0]->inbox_name(), peers[1]->inbox_name()};
    to[0] = peers[0]->connect({1}, inboxes).at(0);
    to[1] = peers[1]->connect({0}, inboxes).at(0);
  }
};

Frame message(float value, std::int64_t elements = 4) {
  Frame frame;
  frame.header.seq = static_cast<std::uint64_t>(value);
  frame.metadata = {1, 2, 3};
  Tensor t = Tensor::empty({elements}, DType::f32);
  for (std::int64_t i = 0; i < elements; ++i) t.data_as<float>()[i] = value + static_cast<float>(i);
  frame.tensors.push_back(t);
  return frame;
}

void check(const Frame& frame, float value, std::int64_t elements = 4) {
  REQUIRE(frame.tensors.size() == 1);
  CHECK(frame.header.seq == static_cast<std::uint64_t>(value));
  CHECK(frame.tensors[0].numel() == elements);
  bool equal = true;
  for (std::int64_t i = 0; i < elements; ++i)
    equal = equal && frame.tensors[0].data_as<float>()[i] == value + static_cast<float>(i);
  CHECK(equal);
}

}  // namespace

TEST_CASE("lazy shm: the first message makes the channel, through the peer's inbox thread") {
  TwoRanks ranks;
  Frame out = message(7);
  ranks.to[0].outbound->send(out, deadline_after(5s));  // rank 1 has not received yet
  Frame in;
  REQUIRE(ranks.to[1].inbound->recv(in, deadline_after(5s)));
  check(in, 7);
  CHECK(ranks.to[1].inbound->peer_pid() == getpid());
}

TEST_CASE("lazy shm: a direction the peer offers is attached, and the way back made, before the first send") {
  TwoRanks ranks;
  // Rank 1 makes and offers the direction 0 -> 1, as a first receive does.
  ShmChannel& from_zero = ranks.peers[1]->receiver(0);
  // Rank 0's inbox thread attaches to it with no send of rank 0's.
  const Deadline give_up = deadline_after(5s);
  while (from_zero.peer_pid() == 0 && Clock::now() < give_up) std::this_thread::sleep_for(1ms);
  CHECK(from_zero.peer_pid() == getpid());
  // ... and has made and offered the way back: with rank 0's inbox thread stopped, rank 1's first
  // send finds it without asking.
  ranks.peers[0]->stop();
  Frame out = message(5);
  ranks.to[1].outbound->send(out, deadline_after(5s));
  Frame in;
  REQUIRE(ranks.to[0].inbound->recv(in, deadline_after(5s)));
  check(in, 5);
}

// Each rank sends first, then receives (as every rank of an all_reduce does).
void first_sends_both_ways(ChannelPair (&to)[2], std::int64_t elements) {
  std::thread other([&] {
    Frame out = message(2, elements);
    to[1].outbound->send(out, deadline_after(5s));
    Frame in;
    REQUIRE(to[1].inbound->recv(in, deadline_after(5s)));
    check(in, 1, elements);
    REQUIRE(to[1].outbound->wait_released(deadline_after(5s)));
  });
  Frame out = message(1, elements);
  to[0].outbound->send(out, deadline_after(5s));
  Frame in;
  REQUIRE(to[0].inbound->recv(in, deadline_after(5s)));
  check(in, 2, elements);
  REQUIRE(to[0].outbound->wait_released(deadline_after(5s)));
  other.join();
}

TEST_CASE("lazy shm: first sends both ways at once do not deadlock") {
  TwoRanks ranks;
  first_sends_both_ways(ranks.to, 4);
}

TEST_CASE("lazy shm: first sends both ways of payloads far beyond the ring lend them at once") {
  // The handshake comes before the first frame, or 16 MiB would stream through a 4 MiB ring to
  // a peer that is itself sending.
  TwoRanks ranks;
  first_sends_both_ways(ranks.to, 4 << 20);
}

TEST_CASE("lazy shm: the channels outlive the endpoint that connected them") {
  LocalExchange exchange(2);
  ChannelPair to[2];
  std::thread ranks[2];
  for (int r = 0; r < 2; ++r)
    ranks[r] = std::thread([&, r] {
      TransportContext context;
      context.rank = r;
      context.world_size = 2;
      auto endpoint = shm_transport().open(context);
      to[r] = endpoint->connect({1 - r}, {}, exchange.rank(r), deadline_after(5s)).at(0);
    });  // the endpoint is gone before any channel is made
  for (auto& rank : ranks) rank.join();
  first_sends_both_ways(to, 4);
}

TEST_CASE("lazy shm: the ring grows under a stream of medium messages, every byte intact") {
  TwoRanks ranks;
  constexpr int kFrames = 400;
  constexpr std::int64_t kElements = 12 << 10;  // 48 KiB: inline, below the 64 KiB threshold
  std::thread receiver([&] {
    std::this_thread::sleep_for(100ms);  // the sender runs ahead: the ring fills and grows
    for (int i = 0; i < kFrames; ++i) {
      Frame in;
      REQUIRE(ranks.to[1].inbound->recv(in, deadline_after(10s)));
      check(in, static_cast<float>(i), kElements);
    }
  });
  for (int i = 0; i < kFrames; ++i) {
    Frame out = message(static_cast<float>(i), kElements);
    ranks.to[0].outbound->send(out, deadline_after(10s));
  }
  receiver.join();
}

TEST_CASE("lazy shm: a peer that dies before the pair ever talked fails the receive waiting for it") {
  const pid_t child = fork();
  if (child == 0) _exit(0);
  ShmChannel::Created created = ShmChannel::create();
  created.channel->expect_sender(child);
  waitpid(child, nullptr, 0);
  Frame in;
  const auto begin = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(created.channel->recv(in, deadline_after(5s)), ChannelClosed);
  CHECK(std::chrono::steady_clock::now() - begin < 2s);
}

TEST_CASE("lazy shm: a send to a peer that never answers ends at its deadline, a close ends it at once, even mid-wait") {
  TwoRanks ranks;
  ranks.peers[1]->stop();  // nobody answers rank 1's inbox
  Frame out = message(1);
  CHECK_THROWS_AS(ranks.to[0].outbound->send(out, deadline_after(300ms)), ChannelTimeout);
  std::thread closer([&] {
    std::this_thread::sleep_for(100ms);  // while the next send waits for the peer
    ranks.to[0].outbound->close("the world aborts");
  });
  Frame again = message(2);
  const auto begin = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(ranks.to[0].outbound->send(again, deadline_after(5s)), ChannelClosed);
  CHECK(std::chrono::steady_clock::now() - begin < 2s);
  closer.join();
  Frame last = message(3);
  CHECK_THROWS_AS(ranks.to[0].outbound->send(last, deadline_after(5s)), ChannelClosed);
}
