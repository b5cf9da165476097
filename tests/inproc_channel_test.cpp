// The inproc channel: FIFO, bounded, buffers circulate, close wakes waiters, deadlines hold.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "inproc/inproc_channel.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

TEST_CASE("frames arrive in order across threads, through many wraps of the ring") {
  InprocChannel channel;
  constexpr int kFrames = 10000;
  std::thread producer([&] {
    Frame f;
    for (int i = 0; i < kFrames; ++i) {
      f.header.seq = static_cast<std::uint64_t>(i);
      f.metadata.assign(static_cast<std::size_t>(i % 7), static_cast<std::uint8_t>(i));
      channel.send(f, deadline_after(10s));
    }
  });
  Frame got;
  for (int i = 0; i < kFrames; ++i) {
    REQUIRE(channel.recv(got, deadline_after(10s)));
    REQUIRE(got.header.seq == static_cast<std::uint64_t>(i));
    REQUIRE(got.metadata.size() == static_cast<std::size_t>(i % 7));
  }
  producer.join();
}

TEST_CASE("tensors change hands by reference") {
  InprocChannel channel;
  Tensor t = Tensor::empty({4}, DType::f32);
  Frame f;
  f.tensors.push_back(t);
  channel.send(f, deadline_after(1s));
  CHECK(f.tensors.empty());
  Frame got;
  REQUIRE(channel.recv(got, deadline_after(1s)));
  REQUIRE(got.tensors.size() == 1);
  CHECK(got.tensors[0].data() == t.data());
}

TEST_CASE("recv returns false at its deadline, send throws when the ring stays full") {
  InprocChannel channel;
  Frame f;
  CHECK_FALSE(channel.recv(f, deadline_after(5ms)));
  for (std::size_t i = 0; i < InprocChannel::kSlots; ++i) channel.send(f, deadline_after(1s));
  CHECK_THROWS_AS(channel.send(f, deadline_after(5ms)), ChannelTimeout);
}

TEST_CASE("close wakes a parked receiver with the reason, after what was sent is drained") {
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
