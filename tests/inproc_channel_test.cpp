// The inproc channel's own promises: bounded, and close drains what was sent before it fails
// the receiver. What every channel promises: channel_conformance_test.cpp.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "inproc/inproc_channel.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

TEST_CASE("inproc: send throws when the ring stays full") {
  InprocChannel channel;
  Frame f;
  for (std::size_t i = 0; i < InprocChannel::kSlots; ++i) channel.send(f, deadline_after(1s));
  CHECK_THROWS_AS(channel.send(f, deadline_after(5ms)), ChannelTimeout);
}

TEST_CASE("inproc: close wakes a parked receiver with the reason, after what was sent is drained") {
  InprocChannel channel;
  Frame f;
  channel.send(f, deadline_after(1s));
  std::thread closer([&] {
    std::this_thread::sleep_for(20ms);
    channel.close("rank 3 died");
  });
  Frame got;
  CHECK(channel.recv(got, deadline_after(10s)));  // the frame sent before close
  CHECK_THROWS_WITH_AS(channel.recv(got, deadline_after(10s)), "rank 3 died", ChannelClosed);
  closer.join();
  CHECK_THROWS_AS(channel.send(f, deadline_after(1s)), ChannelClosed);
}
