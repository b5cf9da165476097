// The shared-memory broadcast ring: every reader gets every object in order, byte-exact, from
// empty to many times a slot and many times the whole ring; the writer waits for the slowest
// reader and says which one it is; deadlines, close, a reader or writer that dies, nonsense in
// the segment, and nothing left behind in /dev/shm.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "channel.hpp"
#include "child_process.hpp"
#include "rankmesh/error.hpp"
#include "shm/shm_broadcast.hpp"
#include "shm_test_support.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;
using rankmesh::testing::Child;
using rankmesh::testing::Pipe;
using rankmesh::testing::configured;
using rankmesh::testing::offered;
using rankmesh::testing::shm_leftovers;

namespace {

std::vector<std::uint8_t> object_bytes(std::uint64_t tag, std::size_t size) {
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t i = 0; i < size; ++i)
    bytes[i] = static_cast<std::uint8_t>(tag * 31 + i * 7 + (i >> 10));
  return bytes;
}

ShmBroadcastOptions small_ring() {
  ShmBroadcastOptions options;
  options.slots = 4;
  options.slot_bytes = 1024;
  options.log = [](const std::string&) {};
  return options;
}

// Object `i` of the sequence test: sizes around the slot and ring boundaries, and empty.
std::size_t size_of(std::uint64_t i) {
  static const std::size_t sizes[] = {0, 1, 1023, 1024, 1025, 4095, 4096, 4097, 10000, 37, 2048};
  return sizes[i % std::size(sizes)];
}

}  // namespace

TEST_CASE("broadcast ring: three readers get every object in order, byte-exact, of any size") {
  auto created = ShmBroadcastRing::create(3, small_ring());
  std::vector<std::unique_ptr<ShmBroadcastRing>> readers;
  for (int r = 0; r < 3; ++r) readers.push_back(ShmBroadcastRing::open(created.name, r, small_ring()));
  CHECK(created.ring->wait_attached(deadline_after(configured(5s))));
  CHECK_FALSE(offered(created.name));  // no longer offered once every reader has attached
  constexpr std::uint64_t kObjects = 300;
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r)
    threads.emplace_back([&, r] {
      std::vector<std::uint8_t> got;
      for (std::uint64_t i = 0; i < kObjects; ++i) {
        std::uint64_t tag = 0;
        if (!readers[static_cast<std::size_t>(r)]->read(tag, got, deadline_after(10s)) ||
            tag != 1000 + i || got != object_bytes(i, size_of(i)))
          ++bad;
      }
    });
  for (std::uint64_t i = 0; i < kObjects; ++i) {
    const auto bytes = object_bytes(i, size_of(i));
    created.ring->write(1000 + i, bytes.data(), bytes.size(), deadline_after(10s));
  }
  CHECK(created.ring->flush(deadline_after(10s)));
  for (auto& t : threads) t.join();
  CHECK(bad == 0);
}

TEST_CASE("broadcast ring: the writer waits for the slowest reader and names it at the deadline") {
  ShmBroadcastOptions options = small_ring();
  options.reader_names = {"rank 1", "rank 2"};
  auto created = ShmBroadcastRing::create(2, options);
  auto fast = ShmBroadcastRing::open(created.name, 0, small_ring());
  auto slow = ShmBroadcastRing::open(created.name, 1, small_ring());
  const auto one_slot = object_bytes(1, 1024);
  std::vector<std::uint8_t> got;
  std::uint64_t tag = 0;
  for (int i = 0; i < 4; ++i) {  // fills the four slots
    created.ring->write(static_cast<std::uint64_t>(i), one_slot.data(), one_slot.size(), deadline_after(1s));
    REQUIRE(fast->read(tag, got, deadline_after(1s)));
  }
  try {
    created.ring->write(4, one_slot.data(), one_slot.size(), deadline_after(100ms));
    FAIL("a write into a full ring returned");
  } catch (const ChannelTimeout& e) {
    CHECK(std::string(e.what()).find("rank 2 left the ring full") != std::string::npos);
    CHECK(std::string(e.what()).find("taken 0 of 4 chunks") != std::string::npos);
  }
  REQUIRE(slow->read(tag, got, deadline_after(1s)));  // frees one slot
  CHECK(tag == 0);
  created.ring->write(4, one_slot.data(), one_slot.size(), deadline_after(1s));
  CHECK_FALSE(created.ring->flush(deadline_after(50ms)));  // the slow reader has 4 left
  for (int i = 1; i <= 4; ++i) {
    REQUIRE(slow->read(tag, got, deadline_after(1s)));
    CHECK(tag == static_cast<std::uint64_t>(i));
  }
  REQUIRE(fast->read(tag, got, deadline_after(1s)));
  CHECK(created.ring->flush(deadline_after(1s)));
}

TEST_CASE("broadcast ring: an object beyond the whole ring streams through while readers read") {
  auto created = ShmBroadcastRing::create(2, small_ring());  // 4 KiB of slots
  auto a = ShmBroadcastRing::open(created.name, 0, small_ring());
  auto b = ShmBroadcastRing::open(created.name, 1, small_ring());
  const auto big = object_bytes(7, 1 << 20);
  std::thread writer([&] { created.ring->write(7, big.data(), big.size(), deadline_after(10s)); });
  std::vector<std::uint8_t> got_a, got_b;
  std::uint64_t tag_a = 0, tag_b = 0;
  std::thread other([&] { CHECK(b->read(tag_b, got_b, deadline_after(10s))); });
  CHECK(a->read(tag_a, got_a, deadline_after(10s)));
  other.join();
  writer.join();
  CHECK(tag_a == 7);
  CHECK(tag_b == 7);
  CHECK(got_a == big);
  CHECK(got_b == big);
}

TEST_CASE("broadcast ring: a read deadline keeps a partial object, an abandoned object is dropped") {
  auto created = ShmBroadcastRing::create(1, small_ring());
  auto reader = ShmBroadcastRing::open(created.name, 0, small_ring());
  std::vector<std::uint8_t> got;
  std::uint64_t tag = 0;
  CHECK_FALSE(reader->read(tag, got, deadline_after(20ms)));  // nothing yet

  // Six slots' worth into a ring of four: the writer times out after four, the reader takes
  // those four in two calls, then the writer's next object replaces the unfinished one.
  const auto partial = object_bytes(1, 6 * 1024);
  CHECK_THROWS_AS(created.ring->write(1, partial.data(), partial.size(), deadline_after(100ms)),
                  ChannelTimeout);
  CHECK_FALSE(reader->read(tag, got, deadline_after(50ms)));  // took 4 chunks, waits for more
  const auto next = object_bytes(2, 100);
  created.ring->write(2, next.data(), next.size(), deadline_after(1s));
  REQUIRE(reader->read(tag, got, deadline_after(1s)));
  CHECK(tag == 2);
  CHECK(got == next);
}

TEST_CASE("broadcast ring: what the writer wrote before closing is read, then the reason") {
  auto created = ShmBroadcastRing::create(1, small_ring());
  auto reader = ShmBroadcastRing::open(created.name, 0, small_ring());
  const auto bytes = object_bytes(3, 3000);
  created.ring->write(3, bytes.data(), bytes.size(), deadline_after(1s));
  created.ring->close("rank 0 shut down");
  std::vector<std::uint8_t> got;
  std::uint64_t tag = 0;
  REQUIRE(reader->read(tag, got, deadline_after(1s)));
  CHECK(got == bytes);
  CHECK_THROWS_WITH_AS(reader->read(tag, got, deadline_after(1s)), "rank 0 shut down", ChannelClosed);
  CHECK_THROWS_WITH_AS(created.ring->write(4, bytes.data(), 1, deadline_after(1s)),
                       "rank 0 shut down", ChannelClosed);
}

TEST_CASE("broadcast ring: a waiting reader wakes when another thread closes the ring") {
  ShmBroadcastOptions options = small_ring();
  options.spin_for = 0ns;  // the reader parks at once
  auto created = ShmBroadcastRing::create(1, options);
  auto reader = ShmBroadcastRing::open(created.name, 0, options);
  std::atomic<pid_t> reader_thread{0};
  std::thread closer([&] {
    // Close once the reader is parked (its thread sleeps), so that the close has to wake it.
    const Deadline deadline = deadline_after(configured(10s));
    while (reader_thread.load() == 0 && Clock::now() < deadline) std::this_thread::yield();
    while (!rankmesh::testing::thread_sleeps(reader_thread.load()) && Clock::now() < deadline)
      std::this_thread::yield();
    reader->close("the world aborted");
  });
  std::vector<std::uint8_t> got;
  std::uint64_t tag = 0;
  reader_thread = static_cast<pid_t>(gettid());
  // Not woken, the read would return false at its deadline.
  CHECK_THROWS_WITH_AS(reader->read(tag, got, deadline_after(configured(10s))), "the world aborted",
                       ChannelClosed);
  closer.join();
}

TEST_CASE("broadcast ring: open refuses other segments, a missing index and a taken one") {
  auto created = ShmBroadcastRing::create(2, small_ring());
  CHECK_THROWS_WITH_AS(ShmBroadcastRing::open(created.name, 2, small_ring()),
                       doctest::Contains("has no reader 2 (it has 2)"), Error);
  auto first = ShmBroadcastRing::open(created.name, 0, small_ring());
  CHECK_THROWS_WITH_AS(ShmBroadcastRing::open(created.name, 0, small_ring()),
                       doctest::Contains("already has its reader 0"), Error);
  CHECK_THROWS_WITH_AS(ShmBroadcastRing::open("/rankmesh-no-such-ring", 0, small_ring()),
                       doctest::Contains("does not name a shared-memory segment"), Error);
  ShmBroadcastOptions impostor = small_ring();
  impostor.writer_pid = getpid() + 1;  // the writer announced another pid than the ring's
  CHECK_THROWS_WITH_AS(ShmBroadcastRing::open(created.name, 1, impostor),
                       doctest::Contains(("is offered by pid " + std::to_string(getpid()) +
                                          ", not by pid " + std::to_string(getpid() + 1)).c_str()),
                       Error);
  CHECK_THROWS_AS(ShmBroadcastRing::create(0, small_ring()), Error);
  CHECK_THROWS_AS(ShmBroadcastRing::create(ShmBroadcastRing::kMaxReaders + 1, small_ring()), Error);
  ShmBroadcastOptions tiny = small_ring();
  tiny.slots = 1;
  CHECK_THROWS_AS(ShmBroadcastRing::create(1, tiny), Error);
  ShmBroadcastOptions limited = small_ring();
  limited.max_object_bytes = 10;
  auto capped = ShmBroadcastRing::create(1, limited);
  std::uint8_t eleven[11] = {};
  CHECK_THROWS_WITH_AS(capped.ring->write(0, eleven, sizeof eleven, deadline_after(1s)),
                       doctest::Contains("11 bytes is beyond the limit of 10"), Error);
}

TEST_CASE("broadcast ring: nonsense in a slot closes the ring with what was wrong") {
  auto created = ShmBroadcastRing::create(2, small_ring());
  auto reader = ShmBroadcastRing::open(created.name, 0, small_ring());
  // A second mapping plays the broken writer (offered until reader 1 attaches).
  const shm::Mapping mapping =
      shm::open_segment(created.name, 0, std::numeric_limits<std::size_t>::max(), "segment");
  std::uint8_t* base = mapping.base;
  std::uint64_t* slot0 = reinterpret_cast<std::uint64_t*>(base + 4096);
  slot0[1] = 5;        // tag
  slot0[2] = 100;      // total
  slot0[3] = 0;        // offset
  slot0[4] = 2000;     // length: more than a slot
  __atomic_store_n(&slot0[0], 1, __ATOMIC_RELEASE);
  std::vector<std::uint8_t> got;
  std::uint64_t tag = 0;
  CHECK_THROWS_WITH_AS(reader->read(tag, got, deadline_after(1s)),
                       doctest::Contains("chunk 0 carries bytes 0+2000 of an object of 100"),
                       ChannelClosed);
  CHECK_THROWS_AS(created.ring->write(1, nullptr, 0, deadline_after(1s)), ChannelClosed);
  shm::unmap(mapping);
}

TEST_CASE("broadcast ring: a reader that dies fails the writer's wait, naming it") {
  ShmBroadcastOptions options = small_ring();
  options.reader_names = {"rank 3"};
  auto created = ShmBroadcastRing::create(1, options);
  Pipe attached;
  Child child([&] {
    auto reader = ShmBroadcastRing::open(created.name, 0, small_ring());
    attached.put("attached");
    pause();  // until killed
    return 0;
  });
  REQUIRE(attached.get() == "attached");
  const auto chunk = object_bytes(0, 1024);
  for (int i = 0; i < 4; ++i)
    created.ring->write(static_cast<std::uint64_t>(i), chunk.data(), chunk.size(), deadline_after(1s));
  child.kill();
  // Had the death gone unnoticed, the write would time out (ChannelTimeout) at its deadline.
  CHECK_THROWS_WITH_AS(created.ring->write(4, chunk.data(), chunk.size(), deadline_after(configured(10s))),
                       doctest::Contains(("rank 3 (pid " + std::to_string(child.pid()) + ") died").c_str()),
                       ChannelClosed);
  child.wait();
  CHECK(shm_leftovers({getpid(), child.pid()}).empty());
}

TEST_CASE("broadcast ring: a writer that dies fails the readers' wait after what it wrote") {
  Pipe name;
  Pipe go;
  Child child([&] {
    ShmBroadcastOptions options = small_ring();
    auto created = ShmBroadcastRing::create(1, options);
    name.put(created.name);
    CHILD_REQUIRE(go.get() == "go");
    const auto bytes = object_bytes(9, 5000);
    created.ring->write(9, bytes.data(), bytes.size(), deadline_after(5s));
    _exit(0);  // dies without closing
  });
  const std::string ring_name = name.get();
  REQUIRE_FALSE(ring_name.empty());
  ShmBroadcastOptions options = small_ring();
  options.writer_name = "rank 0";
  auto reader = ShmBroadcastRing::open(ring_name, 0, options);
  go.put("go");
  std::vector<std::uint8_t> got;
  std::uint64_t tag = 0;
  REQUIRE(reader->read(tag, got, deadline_after(5s)));
  CHECK(got == object_bytes(9, 5000));
  CHECK(child.wait() == 0);
  CHECK_THROWS_WITH_AS(reader->read(tag, got, deadline_after(10s)),
                       doctest::Contains(("rank 0 (pid " + std::to_string(child.pid()) + ") died").c_str()),
                       ChannelClosed);
  CHECK(shm_leftovers({getpid(), child.pid()}).empty());
}

TEST_CASE("broadcast ring: a writer killed before every reader attached leaves nothing behind") {
  for (int attached_readers : {0, 1}) {
    CAPTURE(attached_readers);
    Pipe name;
    Child child([&]() -> int {
      auto created = ShmBroadcastRing::create(2, small_ring());
      name.put(created.name);
      while (true) pause();
    });
    const std::string ring_name = name.get();
    REQUIRE_FALSE(ring_name.empty());
    std::unique_ptr<ShmBroadcastRing> reader;
    if (attached_readers == 1) reader = ShmBroadcastRing::open(ring_name, 0, small_ring());
    child.kill();
    CHECK(child.wait() == -SIGKILL);
    CHECK(shm_leftovers({child.pid()}).empty());
    CHECK_THROWS_AS(ShmBroadcastRing::open(ring_name, 1, small_ring()), std::system_error);
  }
}

TEST_CASE("broadcast ring: a writer going away waits for a late reader to attach, which reads") {
  ShmBroadcastOptions options = small_ring();
  auto created = ShmBroadcastRing::create(2, options);
  auto early = ShmBroadcastRing::open(created.name, 0, options);
  const auto bytes = object_bytes(4, 3000);
  created.ring->write(4, bytes.data(), bytes.size(), deadline_after(configured(5s)));
  CHECK_FALSE(created.ring->wait_attached(deadline_after(20ms)));  // reader 1 has not attached
  CHECK(offered(created.name));
  std::unique_ptr<ShmBroadcastRing> late;
  std::thread late_reader([&] { late = ShmBroadcastRing::open(created.name, 1, options); });
  CHECK(created.ring->wait_attached(deadline_after(configured(10s))));
  late_reader.join();
  created.ring.reset();  // the writer goes away
  std::vector<std::uint8_t> got;
  std::uint64_t tag = 0;
  REQUIRE(late->read(tag, got, deadline_after(configured(5s))));
  CHECK(tag == 4);
  CHECK(got == bytes);
}
