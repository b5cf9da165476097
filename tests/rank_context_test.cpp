// One rank's side of the data plane (RankContext): what it does when a failure comes before
// its channels, and with frames that overtake their receive.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include "inproc/inproc_channel.hpp"
#include "rank_world.hpp"
#include "rankmesh/error.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;
using namespace std::chrono_literals;

TEST_CASE("rank context: channels connected after a failure are closed with its reason") {
  // Across processes the rank actor runs before the data plane has connected, and may fail
  // the rank in between (the registry reports a lost peer during the rendezvous).
  auto context = std::make_shared<RankContext>(
      0, 2, 0, 5s, [](const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype); },
      std::vector<DeviceBackend*>{}, [](const std::string&) {});
  context->fail("rank 1 was lost during the rendezvous");
  auto to_peer = std::make_shared<InprocChannel>();
  auto from_peer = std::make_shared<InprocChannel>();
  context->connect({nullptr, to_peer}, {nullptr, from_peer});
  Frame frame;
  try {
    std::string why;
    const Deadline deadline = deadline_after(5s);
    const auto describe = [] { return std::string("a send"); };
    context->try_send(1, frame, deadline, deadline, describe, why);
    FAIL("the send went through a channel of a failed rank");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::peer_failed);
    CHECK(std::string(e.what()).find("rank 1 was lost during the rendezvous") != std::string::npos);
  }
  CHECK_THROWS_AS(from_peer->recv(frame, deadline_after(5s)), ChannelClosed);
}

TEST_CASE("rank context: a failure racing the connection closes every channel") {
  // Whichever comes first, no channel stays open (run under the sanitizers for the race).
  for (int round = 0; round < 50; ++round) {
    auto context = std::make_shared<RankContext>(
        0, 2, 0, 5s, [](const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype); },
        std::vector<DeviceBackend*>{}, [](const std::string&) {});
    auto to_peer = std::make_shared<InprocChannel>();
    auto from_peer = std::make_shared<InprocChannel>();
    std::thread failing([&] { context->fail("lost"); });
    context->connect({nullptr, to_peer}, {nullptr, from_peer});
    failing.join();
    Frame frame;
    CHECK_THROWS_AS(from_peer->recv(frame, deadline_after(5s)), ChannelClosed);
  }
}

TEST_CASE("rank context: frames that overtake their receive are bounded, beyond it the error "
          "names the peer") {
  // Rank 0 keeps sending on one group while rank 1 waits on another: every frame is kept for
  // its own receive, up to the bound.
  RankWorld world({0, 0}, inproc_transport(), inproc_transport(), 5s);
  std::string waiting_error;
  auto errors = world.run([&](int rank) {
    GroupCoordinator busy(make_group_state(world.context(rank), GroupKind::tp, 0, Group{0, 1}));
    GroupCoordinator waiting(make_group_state(world.context(rank), GroupKind::world, 0, Group{0, 1}));
    if (rank == 0) {
      try {
        for (std::size_t i = 0; i <= RankContext::kMaxStashedFrames; ++i) busy.send_object(Value("early"), 1);
      } catch (const Error&) {
        // The receiver closes the channel once it is beyond the bound.
      }
      return;
    }
    try {
      waiting.recv_object(0);
      waiting_error = "(the receive returned)";
    } catch (const Error& e) {
      waiting_error = std::string(to_string(e.code())) + ": " + e.what();
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK_MESSAGE(waiting_error.rfind("limit exceeded: ", 0) == 0, waiting_error);
  CHECK_MESSAGE(waiting_error.find("rank 0 sent more than 1024 frames") != std::string::npos, waiting_error);
}
