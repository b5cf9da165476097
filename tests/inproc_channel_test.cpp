// The inproc channel's own promises: bounded, close drains what was sent before it fails the
// receiver, and a small frame travels as bytes (its tensors the receiver's) while a larger one
// changes hands whole. What every channel promises: channel_conformance_test.cpp.
#include <doctest/doctest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <new>
#include <thread>
#include <vector>

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

namespace {

Tensor filled(Shape shape, DType dtype, std::uint8_t seed) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* bytes = static_cast<std::uint8_t*>(t.data());
  for (std::size_t i = 0; i < t.nbytes(); ++i) bytes[i] = static_cast<std::uint8_t>(seed + i);
  return t;
}

// Tensor::empty, counting its calls; throws std::bad_alloc while `fail` is set.
struct CountingAllocator {
  int calls = 0;
  bool fail = false;
  Allocator allocator() {
    return [this](const Shape& shape, DType dtype) {
      if (fail) throw std::bad_alloc();
      ++calls;
      return Tensor::empty(shape, dtype);
    };
  }
};

}  // namespace

TEST_CASE("inproc: a small frame travels as bytes, its tensors made by the receiver's allocator") {
  CountingAllocator counting;
  InprocChannel channel(counting.allocator());
  Frame sent;
  sent.header = FrameHeader{7, 3, 41, 2};
  sent.metadata = {1, 2, 3, 4, 5};
  const Tensor a = filled(Shape{2, 3}, DType::f32, 10);
  const Tensor b = filled(Shape{5}, DType::u8, 90);
  const Tensor empty = Tensor::empty(Shape{0, 4}, DType::i64);
  sent.tensors = {a, b, empty};
  channel.send(sent, deadline_after(1s));
  CHECK(sent.tensors.empty());  // the sender's references end with send, as for a whole frame
  static_cast<std::uint8_t*>(a.data())[0] = 0;  // changed after send: the frame holds its bytes

  Frame got;
  REQUIRE(channel.recv(got, deadline_after(1s)));
  CHECK(got.header.group == 7);
  CHECK(got.header.op == 3);
  CHECK(got.header.seq == 41);
  CHECK(got.header.src == 2);
  CHECK(got.metadata == std::vector<std::uint8_t>{1, 2, 3, 4, 5});
  REQUIRE(got.tensors.size() == 3);
  CHECK(counting.calls >= 1);
  CHECK(got.tensors[0].data() != a.data());
  CHECK(equal(got.tensors[0], filled(Shape{2, 3}, DType::f32, 10)));
  CHECK(equal(got.tensors[1], b));
  CHECK(got.tensors[2].shape() == Shape{0, 4});
  CHECK(got.tensors[2].dtype() == DType::i64);
  CHECK_FALSE(got.dict.has_value());
  CHECK_FALSE(got.loan);
}

TEST_CASE("inproc: metadata alone travels as bytes up to a slot's worth, a buffer of its own") {
  InprocChannel channel;
  constexpr std::size_t kInline = InprocChannel::kInlineBytes;
  for (const std::size_t size : {std::size_t{0}, std::size_t{1}, kInline, kInline + 1, std::size_t{5000}}) {
    CAPTURE(size);
    Frame sent;
    sent.header.seq = size;
    for (std::size_t i = 0; i < size; ++i) sent.metadata.push_back(static_cast<std::uint8_t>(i * 7));
    const std::vector<std::uint8_t> expected = sent.metadata;
    const std::uint8_t* sent_buffer = sent.metadata.data();
    channel.send(sent, deadline_after(1s));
    Frame got;
    got.metadata = {9, 9, 9};  // a receiver's spent buffer: replaced, not appended to
    got.tensors = {Tensor::empty(Shape{1}, DType::u8)};
    REQUIRE(channel.recv(got, deadline_after(1s)));
    CHECK(got.header.seq == size);
    CHECK(got.metadata == expected);
    CHECK(got.tensors.empty());
    // Inline, the receiver's own buffer holds the bytes; whole, the sender's buffer changed hands.
    if (size != 0) CHECK((got.metadata.data() == sent_buffer) == (size > kInline));
  }
}

TEST_CASE("inproc: a frame too large for a slot changes hands whole, its tensors shared") {
  CountingAllocator counting;
  InprocChannel channel(counting.allocator());
  Frame sent;
  const Tensor big = filled(Shape{1024}, DType::f32, 1);  // 4 KiB
  sent.tensors = {big};
  channel.send(sent, deadline_after(1s));
  Frame got;
  REQUIRE(channel.recv(got, deadline_after(1s)));
  REQUIRE(got.tensors.size() == 1);
  CHECK(got.tensors[0].data() == big.data());
  CHECK(counting.calls == 0);
}

TEST_CASE("inproc: a receive whose allocator fails consumes nothing; the next one gets the frame") {
  CountingAllocator counting;
  InprocChannel channel(counting.allocator());
  // One tensor gets memory of its own (the allocator's failure named as an Error); two share
  // one block (its std::bad_alloc passes as it is).
  for (const std::size_t tensors : {std::size_t{1}, std::size_t{2}}) {
    CAPTURE(tensors);
    Frame sent;
    sent.metadata = {4, 2};
    for (std::size_t i = 0; i < tensors; ++i) sent.tensors.push_back(filled(Shape{8}, DType::u8, 3));
    channel.send(sent, deadline_after(1s));
    Frame got;
    counting.fail = true;
    CHECK_THROWS(channel.recv(got, deadline_after(1s)));
    counting.fail = false;
    REQUIRE(channel.recv(got, deadline_after(1s)));
    CHECK(got.metadata == std::vector<std::uint8_t>{4, 2});
    REQUIRE(got.tensors.size() == tensors);
    for (const Tensor& t : got.tensors) CHECK(equal(t, filled(Shape{8}, DType::u8, 3)));
    CHECK_FALSE(channel.recv(got, deadline_after(10ms)));  // it was taken once
  }
}

TEST_CASE("inproc: a channel holds no slot memory until frames fill its slots") {
  // A world connects every pair of its ranks; most pairs never talk. The channel is built in
  // fresh anonymous pages (no huge pages: one would make the whole range resident at the first
  // write), so mincore says which of them its constructor and its frames wrote.
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const std::size_t bytes = (sizeof(InprocChannel) + page - 1) / page * page;
  const std::size_t pages = bytes / page;
  const std::size_t slots_at = sizeof(InprocChannel) - InprocChannel::kSlots * InprocChannel::kSlotBytes;
  const std::size_t head_pages = (slots_at + page - 1) / page;  // what a channel always touches
  constexpr std::size_t kFrames = 8;                             // slots 0-7 carry them
  const std::size_t used_pages = (slots_at + kFrames * InprocChannel::kSlotBytes + page - 1) / page;
  if (used_pages >= pages) {
    MESSAGE("pages of " << page << " bytes: the slots share the object's pages; nothing to check");
    return;
  }
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(memory != MAP_FAILED);
  REQUIRE(madvise(memory, bytes, MADV_NOHUGEPAGE) == 0);
  auto resident = [&] {
    std::vector<unsigned char> in_core(pages);
    REQUIRE(mincore(memory, bytes, in_core.data()) == 0);
    std::size_t n = 0;
    for (unsigned char p : in_core) n += p & 1;
    return n;
  };
  auto* channel = new (memory) InprocChannel;
  CHECK(resident() <= head_pages);  // base, counters, parkers: 4 KiB pages, 1 of 11 (13 before)
  Frame f;
  f.metadata.assign(100, 7);
  for (std::size_t i = 0; i < kFrames; ++i) {
    channel->send(f, deadline_after(1s));
    Frame got;
    REQUIRE(channel->recv(got, deadline_after(1s)));
    CHECK(got.metadata == std::vector<std::uint8_t>(100, 7));
    f.metadata.assign(100, 7);
  }
  CHECK(resident() <= used_pages);  // the slots the frames used, and no others
  channel->~InprocChannel();
  munmap(memory, bytes);
}
