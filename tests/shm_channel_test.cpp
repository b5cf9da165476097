// The shm channel between two processes of one node, and the buffer pool it receives into:
// frames in order through ring wraps, payloads byte-exact with one copy and with two, the pool
// recycling, deadlines, close, a peer killed mid-transfer, a peer writing nonsense, and nothing
// left behind in /dev/shm.
//
// Two-process tests fork (child_process.hpp).
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "buffer_pool.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/event.hpp"
#include "shm/shm_channel.hpp"
#include "child_process.hpp"
#include "shm_test_support.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;
using rankmesh::testing::Child;
using rankmesh::testing::error_code_of;
using rankmesh::testing::Pipe;
using rankmesh::testing::shm_leftovers;
using rankmesh::testing::configured;
using rankmesh::testing::handoff_of;
using rankmesh::testing::offered;

namespace {

constexpr std::size_t k64MiB = std::size_t{64} << 20;

// ---- frames -----------------------------------------------------------------------------------

std::uint8_t pattern(std::uint64_t frame, std::size_t tensor, std::size_t byte) {
  return static_cast<std::uint8_t>(frame * 131 + tensor * 29 + byte * 7 + (byte >> 9));
}

Tensor patterned(Shape shape, DType dtype, std::uint64_t frame, std::size_t index) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* bytes = static_cast<std::uint8_t*>(t.data());
  for (std::size_t i = 0; i < t.nbytes(); ++i) bytes[i] = pattern(frame, index, i);
  return t;
}

bool matches(const Tensor& t, std::uint64_t frame, std::size_t index) {
  const auto* bytes = static_cast<const std::uint8_t*>(t.data());
  for (std::size_t i = 0; i < t.nbytes(); ++i)
    if (bytes[i] != pattern(frame, index, i)) return false;
  return true;
}

// Frame `i` of the wrap test: metadata of a varying length, 0-3 tensors of varying sizes,
// some inline, some lent (above the 4 KiB threshold the test sets).
Frame wrap_frame(std::uint64_t i) {
  Frame f;
  f.header = FrameHeader{static_cast<std::uint32_t>(i % 5), static_cast<std::uint32_t>(i % 3), i,
                         static_cast<std::int32_t>(i % 7)};
  f.metadata.assign(i % 301, static_cast<std::uint8_t>(i));
  const std::size_t count = i % 4;
  for (std::size_t t = 0; t < count; ++t) {
    const std::int64_t elements = static_cast<std::int64_t>((i * 37 + t * 1000) % 3000);
    f.tensors.push_back(patterned({elements}, DType::f32, i, t));
  }
  return f;
}

bool frame_ok(const Frame& f, std::uint64_t i) {
  Frame want = wrap_frame(i);
  if (f.header.group != want.header.group || f.header.op != want.header.op ||
      f.header.seq != want.header.seq || f.header.src != want.header.src)
    return false;
  if (f.metadata != want.metadata || f.tensors.size() != want.tensors.size()) return false;
  for (std::size_t t = 0; t < f.tensors.size(); ++t)
    if (!equal(f.tensors[t], want.tensors[t])) return false;
  return true;
}

// Both ends of a channel in this process, attached, large payloads lent (one copy).
struct Connected {
  ShmChannel::Created created;
  std::unique_ptr<ShmChannel> sender;
  ShmChannel& receiver() { return *created.channel; }
};

Connected connected(const ShmOptions& options) {
  Connected pair{ShmChannel::create(options), nullptr};
  pair.sender = ShmChannel::open(pair.created.name, options);
  REQUIRE(pair.receiver().wait_peer(deadline_after(5s)));
  REQUIRE(pair.sender->wait_peer(deadline_after(5s)));
  REQUIRE(pair.sender->single_copy());
  return pair;
}

ShmOptions named(std::string peer) {
  ShmOptions options;
  options.peer_name = std::move(peer);
  return options;
}

}  // namespace

// ---- the buffer pool ------------------------------------------------------------------------

TEST_CASE("buffer pool: block sizes are powers of two below 2 MiB and 2 MiB multiples above") {
  CHECK(BufferPool::block_size(1) == 64);
  CHECK(BufferPool::block_size(100) == 128);
  CHECK(BufferPool::block_size(std::size_t{1} << 20) == std::size_t{1} << 20);
  CHECK(BufferPool::block_size((std::size_t{1} << 20) + 1) == BufferPool::kHugePage);
  CHECK(BufferPool::block_size(BufferPool::kHugePage + 1) == 2 * BufferPool::kHugePage);
  CHECK(BufferPool::block_size(k64MiB) == k64MiB);
}

TEST_CASE("buffer pool: a block comes back when its last tensor goes, and is handed out again") {
  BufferPool pool;
  void* first = nullptr;
  {
    Tensor a = pool.allocate({16, 1024, 1024}, DType::f32);  // 64 MiB
    first = a.data();
    CHECK(reinterpret_cast<std::uintptr_t>(first) % BufferPool::kHugePage == 0);
    Tensor shared = a;  // a second reference keeps the block out of the pool
    a = Tensor();
    CHECK(pool.stats().in_use_bytes == k64MiB);
  }
  CHECK(pool.stats().cached_bytes == k64MiB);
  Tensor b = pool.allocate({k64MiB}, DType::u8);
  CHECK(b.data() == first);
  CHECK(pool.stats().reused == 1);
  CHECK(pool.stats().fresh == 1);

  Tensor small = pool.allocate({10}, DType::f64);
  CHECK(reinterpret_cast<std::uintptr_t>(small.data()) % 64 == 0);
  void* small_block = small.data();
  small = Tensor();
  CHECK(pool.allocate({100}, DType::u8).data() == small_block);  // same 128-byte class

  Tensor empty = pool.allocate({0, 3}, DType::f32);
  CHECK(empty.numel() == 0);
}

TEST_CASE("buffer pool: tensors outlive the pool handle, the cache stays under its cap") {
  Tensor survivor;
  {
    BufferPool pool(BufferPoolOptions{.max_cached_bytes = BufferPool::kHugePage});
    survivor = pool.allocate({4 << 20}, DType::u8);
    Tensor a = pool.allocate({4 << 20}, DType::u8);
    Tensor b = pool.allocate({1 << 20}, DType::u8);
    a = Tensor();  // 4 MiB: beyond the cap, given back
    b = Tensor();  // 1 MiB: cached
    CHECK(pool.stats().cached_bytes == std::size_t{1} << 20);
    pool.trim();
    CHECK(pool.stats().cached_bytes == 0);
  }
  std::memset(survivor.data(), 7, survivor.nbytes());  // still valid memory
  survivor = Tensor();                                 // frees the pool with it
}

TEST_CASE("buffer pool: the allocator adaptor draws from the pool, from many threads") {
  BufferPool pool;
  Allocator allocate = pool.allocator();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        Tensor x = allocate({static_cast<std::int64_t>(1000 + i % 7)}, DType::f32);
        static_cast<float*>(x.data())[0] = 1.0f;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(pool.stats().in_use_bytes == 0);
  CHECK(pool.stats().reused > 0);
}

// ---- shm, one process ------------------------------------------------------------------------

TEST_CASE("shm: two threads of one process, inline, copied and lent payloads, many frames") {
  // Payloads above 4 KiB are lent as they are (copy_threshold 0), or go inline when the frame
  // fits the ring at once and are copied and lent when it does not (the default).
  for (std::size_t copy_threshold : {ShmOptions{}.copy_threshold, std::size_t{0}}) {
    CAPTURE(copy_threshold);
    ShmOptions options;
    options.ring_bytes = 64 << 10;
    options.inline_threshold = 4 << 10;
    options.copy_threshold = copy_threshold;
    auto created = ShmChannel::create(options);
    CHECK(offered(created.name));
    auto sender = ShmChannel::open(created.name, options);
    ShmChannel& receiver = *created.channel;
    REQUIRE(receiver.wait_peer(deadline_after(5s)));
    CHECK_FALSE(offered(created.name));  // no longer offered once both sides are attached
    REQUIRE(sender->wait_peer(deadline_after(5s)));
    CHECK(sender->single_copy());
    CHECK(receiver.peer_pid() == getpid());

    constexpr std::uint64_t kFrames = 3000;
    std::thread producer([&] {
      for (std::uint64_t i = 0; i < kFrames; ++i) {
        Frame f = wrap_frame(i);
        sender->send(f, deadline_after(10s));
      }
      sender->flush(deadline_after(10s));
    });
    Frame got;
    std::uint64_t bad = kFrames;
    for (std::uint64_t i = 0; i < kFrames; ++i) {
      REQUIRE(receiver.recv(got, deadline_after(10s)));
      if (!frame_ok(got, i) && bad == kFrames) bad = i;
    }
    producer.join();
    CHECK(bad == kFrames);
  }
  CHECK(shm_leftovers({getpid()}).empty());
}

TEST_CASE("shm: a medium payload goes inline when its frame fits the ring, else send copies and "
          "lends it, either way send never waits for the receiver and the caller may reuse its "
          "tensor at once") {
  ShmOptions options;
  options.ring_bytes = 4 << 20;  // starts at 64 KiB, grows to 2 MiB for the first frame
  auto created = ShmChannel::create(options);
  auto sender = ShmChannel::open(created.name, options);
  REQUIRE(created.channel->wait_peer(deadline_after(5s)));
  REQUIRE(sender->wait_peer(deadline_after(5s)));
  REQUIRE(sender->single_copy());
  // The first frame fills the ring more than half: the others find no room and are lent copies.
  constexpr std::uint64_t kFrames = 4;
  for (std::uint64_t i = 0; i < kFrames; ++i) {
    Tensor mine = patterned({1 << 20}, DType::u8, i, 0);
    Frame f;
    f.tensors.push_back(mine);
    sender->send(f, deadline_after(1s));  // nobody receives yet
    std::memset(mine.data(), 0xee, mine.nbytes());  // ours again
  }
  for (std::uint64_t i = 0; i < kFrames; ++i) {
    Frame got;
    REQUIRE(created.channel->recv(got, deadline_after(5s)));
    REQUIRE(got.tensors.size() == 1);
    CHECK(matches(got.tensors[0], i, 0));
  }
  CHECK(sender->flush(deadline_after(5s)));
}

TEST_CASE("shm: a borrowed payload is copied while the receiver reads it; the caller may change "
          "it once send returns") {
  // Frames of [lent as it is (donated), borrowed, small inline, borrowed]: the receiver takes
  // them with deadlines that pass at once, so that its reads of the borrowed ones stop and go
  // on where the sender's copy has got to.
  Connected pair = connected(ShmOptions{});
  auto& sender = pair.sender;
  constexpr std::uint64_t kFrames = 12;
  constexpr std::int64_t kBig = std::int64_t{6} << 20;  // beyond copy_threshold: lent
  std::vector<Frame> got(kFrames);
  std::thread receiver([&] {
    for (std::uint64_t i = 0; i < kFrames; ++i) {
      const auto give_up = deadline_after(configured(20s));
      while (!pair.receiver().recv(got[i], deadline_after(0ms)) && Clock::now() < give_up) {
      }
    }
  });
  Tensor borrowed_a = Tensor::empty({kBig}, DType::u8);
  Tensor borrowed_b = Tensor::empty({kBig + 4096}, DType::u8);
  for (std::uint64_t i = 0; i < kFrames; ++i) {
    Frame f;
    f.header.seq = i;
    f.tensors.push_back(patterned({kBig / 2}, DType::u8, i, 0));
    std::memcpy(borrowed_a.data(), patterned({kBig}, DType::u8, i, 1).data(), borrowed_a.nbytes());
    std::memcpy(borrowed_b.data(), patterned({kBig + 4096}, DType::u8, i, 3).data(),
                borrowed_b.nbytes());
    f.tensors.push_back(borrowed_a);
    f.tensors.push_back(patterned({100}, DType::f32, i, 2));
    f.tensors.push_back(borrowed_b);
    f.borrowed = {1, 3};
    sender->send(f, deadline_after(configured(10s)));
    CHECK(f.borrowed.empty());
    std::memset(borrowed_a.data(), 0xee, borrowed_a.nbytes());  // the caller's again
    std::memset(borrowed_b.data(), 0xee, borrowed_b.nbytes());
  }
  receiver.join();
  for (std::uint64_t i = 0; i < kFrames; ++i) {
    CAPTURE(i);
    REQUIRE(got[i].tensors.size() == 4);
    CHECK(got[i].header.seq == i);
    for (std::size_t t = 0; t < 4; ++t) CHECK(matches(got[i].tensors[t], i, t));
  }
  CHECK(sender->flush(deadline_after(5s)));
}

TEST_CASE("shm: a frame that streams through a small ring copies its borrowed payloads first") {
  // Its inline payload, after a borrowed one, does not fit the ring: the receiver must take it
  // while the sender is still writing, so the borrowed one must be readable before that.
  ShmOptions options;
  options.ring_bytes = 64 << 10;
  Connected pair = connected(options);
  auto& sender = pair.sender;
  Frame got;
  bool received = false;
  std::string failed;
  std::thread receiver([&] {
    try {
      received = pair.receiver().recv(got, deadline_after(configured(10s)));
    } catch (const std::exception& e) {
      failed = e.what();
    }
  });
  Tensor mine = patterned({std::int64_t{4} << 20}, DType::u8, 7, 0);
  Frame f;
  f.tensors.push_back(mine);
  f.tensors.push_back(patterned({64 << 10}, DType::u8, 7, 1));  // inline, beyond the ring's room
  f.metadata.assign(1000, 7);
  f.borrowed = {0};
  sender->send(f, deadline_after(configured(10s)));
  std::memset(mine.data(), 0xee, mine.nbytes());
  receiver.join();
  CHECK(failed == "");  // each side waiting for the other would end in the receiver's timeout
  REQUIRE(received);
  REQUIRE(got.tensors.size() == 2);
  CHECK(matches(got.tensors[0], 7, 0));
  CHECK(matches(got.tensors[1], 7, 1));
  CHECK(sender->flush(deadline_after(5s)));
}

TEST_CASE("shm: a send that times out before its frame went out gives the borrowed tensors back") {
  ShmOptions options;
  options.ring_bytes = 64 << 10;
  Connected pair = connected(options);
  auto& sender = pair.sender;
  Frame filler;
  filler.metadata.assign(60000, 1);  // the ring has no room for another frame's header now
  sender->send(filler, deadline_after(1s));
  Tensor mine = patterned({std::int64_t{3} << 20}, DType::u8, 4, 0);
  Frame f;
  f.tensors.push_back(mine);
  f.metadata.assign(8000, 2);
  f.borrowed = {0};
  CHECK_THROWS_AS(sender->send(f, deadline_after(30ms)), ChannelTimeout);
  // Nothing went out: the frame holds the caller's tensor again, still marked, and goes as it is.
  REQUIRE(f.tensors.size() == 1);
  CHECK(f.tensors[0].data() == mine.data());
  CHECK(f.borrowed == std::vector<std::uint32_t>{0});
  Frame got;
  REQUIRE(pair.receiver().recv(got, deadline_after(1s)));
  CHECK(got.metadata.size() == 60000);
  sender->send(f, deadline_after(configured(5s)));
  std::memset(mine.data(), 0xee, mine.nbytes());
  REQUIRE(pair.receiver().recv(got, deadline_after(configured(5s))));
  REQUIRE(got.tensors.size() == 1);
  CHECK(matches(got.tensors[0], 4, 0));
  CHECK(sender->flush(deadline_after(5s)));
}

TEST_CASE("shm: deadlines — recv returns false, send times out on a full ring") {
  ShmOptions options;
  options.ring_bytes = 64 << 10;
  auto created = ShmChannel::create(options);
  auto sender = ShmChannel::open(created.name, options);
  Frame f;
  auto start = Clock::now();
  CHECK_FALSE(created.channel->recv(f, deadline_after(30ms)));
  CHECK(Clock::now() - start >= 30ms);

  Frame big;
  big.metadata.assign(20000, 1);
  int sent = 0;
  CHECK_THROWS_AS(
      [&] {
        while (true) {
          Frame copy = big;
          sender->send(copy, deadline_after(30ms));
          ++sent;
        }
      }(),
      ChannelTimeout);
  CHECK(sent == 3);  // 3 x (48 + 20000) bytes fit in 64 KiB, a fourth does not
  // What was sent still arrives; then the ring has room again.
  for (int i = 0; i < sent; ++i) REQUIRE(created.channel->recv(f, deadline_after(1s)));
  CHECK(f.metadata.size() == 20000);
  Frame again = big;
  sender->send(again, deadline_after(1s));
}

TEST_CASE("shm: malformed control data closes the channel with a message saying what was wrong") {
  struct Case {
    const char* what;
    const char* expect;
  };
  for (Case c : {Case{"link sequence gap", "link sequence number 7 where 0 was expected"},
                 Case{"bad magic", "bad magic 0xabababab"},
                 Case{"tail beyond the ring", "beyond the ring"},
                 Case{"metadata beyond the limit", "bytes exceeds the limit of"},
                 Case{"payload unlike its descriptors", "payload length is 12345 bytes"},
                 Case{"head beyond tail", "beyond the"}}) {
    CAPTURE(c.what);
    std::vector<std::string> logged;
    ShmOptions options;
    options.ring_bytes = 64 << 10;
    options.log = [&](const std::string& line) { logged.push_back(line); };
    auto created = ShmChannel::create(options);
    // Play a broken peer: map the segment ourselves while the receiver still offers it.
    const shm::Mapping mapping =
        shm::open_segment(created.name, 0, std::numeric_limits<std::size_t>::max(), "segment");
    std::uint8_t* segment = mapping.base;
    auto sender = ShmChannel::open(created.name, options);

    Frame f;
    f.metadata.assign(100, 9);
    sender->send(f, deadline_after(1s));
    std::uint8_t* record = segment + ShmChannel::Layout::kControlBytes;
    auto* tail = reinterpret_cast<std::uint64_t*>(segment + ShmChannel::Layout::kTailOffset);
    auto* head = reinterpret_cast<std::uint64_t*>(segment + ShmChannel::Layout::kHeadOffset);
    const std::string name = c.what;
    if (name == "link sequence gap") {
      const std::uint64_t seq = 7;
      std::memcpy(record + 8, &seq, 8);
    } else if (name == "bad magic") {
      std::memset(record, 0xab, 4);
    } else if (name == "tail beyond the ring") {
      __atomic_store_n(tail, std::uint64_t{1} << 40, __ATOMIC_SEQ_CST);
    } else if (name == "payload unlike its descriptors") {
      const std::uint64_t payload = 12345;
      std::memcpy(record + 44, &payload, 8);
    } else if (name == "metadata beyond the limit") {
      const std::uint32_t metadata = 1u << 30;
      std::memcpy(record + 36, &metadata, 4);
    } else {
      __atomic_store_n(head, std::uint64_t{1} << 40, __ATOMIC_SEQ_CST);
    }

    Frame got;
    if (name == "head beyond tail") {
      // The sender reads the receiver's head only when its own copy says a frame does not fit:
      // the bogus head is found then. Until then it writes only where its copy says the ring
      // is free, which the bogus value does not change.
      int sent = 0;
      try {
        for (; sent < 100'000; ++sent) {
          f.metadata.assign(100, 9);
          sender->send(f, deadline_after(1s));
        }
        FAIL("send went on after the receiver's counter ran ahead");
      } catch (const ChannelClosed& e) {
        CHECK(std::string(e.what()).find(c.expect) != std::string::npos);
      }
      CHECK(sent > 0);
      // What was complete in the ring before still arrives (the first frame and those sent
      // since); then the close.
      // Each whole: the sender never wrote over what the receiver had not read.
      for (int k = 0; k <= sent; ++k) {
        REQUIRE(created.channel->recv(got, deadline_after(1s)));
        REQUIRE(got.metadata == std::vector<std::uint8_t>(100, 9));
      }
      CHECK_THROWS_WITH_AS(created.channel->recv(got, deadline_after(1s)),
                           doctest::Contains(c.expect), ChannelClosed);
    } else {
      try {
        created.channel->recv(got, deadline_after(1s));
        FAIL("a malformed frame was accepted");
      } catch (const ChannelClosed& e) {
        CHECK(std::string(e.what()).find(c.expect) != std::string::npos);
        CHECK(std::string(e.what()).find("peer (pid " + std::to_string(getpid()) + ")") !=
              std::string::npos);
      }
      // Closed for both sides, with the same message; this process goes on.
      CHECK_THROWS_WITH_AS(created.channel->recv(got, deadline_after(1s)),
                           doctest::Contains(c.expect), ChannelClosed);
      CHECK_THROWS_WITH_AS(sender->send(f, deadline_after(1s)), doctest::Contains(c.expect),
                           ChannelClosed);
    }
    CHECK(logged.size() == 1);
    shm::unmap(mapping);
  }
  CHECK(shm_leftovers({getpid()}).empty());
}

TEST_CASE("shm: a sender that goes away withdraws what it lent, the receiver never reads it") {
  ShmOptions options;
  options.inline_threshold = 1024;
  options.copy_threshold = 0;
  auto created = ShmChannel::create(options);
  auto sender = ShmChannel::open(created.name, options);
  REQUIRE(created.channel->wait_peer(deadline_after(5s)));
  REQUIRE(sender->wait_peer(deadline_after(5s)));
  Frame f;
  f.metadata = {1};
  sender->send(f, deadline_after(1s));
  f.tensors.push_back(patterned({1 << 20}, DType::u8, 0, 0));  // lent, not copied
  sender->send(f, deadline_after(1s));
  sender.reset();  // closes, withdraws, frees the tensor
  Frame got;
  REQUIRE(created.channel->recv(got, deadline_after(1s)));  // the inline frame still arrives
  CHECK(got.metadata == std::vector<std::uint8_t>{1});
  CHECK_THROWS_WITH_AS(created.channel->recv(got, deadline_after(1s)),
                       doctest::Contains("closed the channel"), ChannelClosed);
}

TEST_CASE("shm: open refuses what is not a channel, and a name already taken") {
  std::string stranger;
  int handoff = -1;
  const shm::Mapping mapping =
      shm::create_segment(ShmChannel::Layout::kControlBytes + (1 << 20), stranger, handoff);
  CHECK_THROWS_WITH_AS(ShmChannel::open(stranger), doctest::Contains("is not a rankmesh channel"),
                       Error);
  CHECK(offered(stranger));  // someone else's segment is left alone
  shm::unmap(mapping);
  shm::end_handoff(handoff);

  auto created = ShmChannel::create();
  auto sender = ShmChannel::open(created.name);
  CHECK_THROWS_WITH_AS(ShmChannel::open(created.name), doctest::Contains("already has a sender"),
                       Error);
  REQUIRE(created.channel->wait_peer(deadline_after(configured(5s))));
  CHECK_THROWS_AS(ShmChannel::open(created.name), std::system_error);  // no longer offered
  CHECK_THROWS_WITH_AS(ShmChannel::open("/rankmesh-no-such-segment"),
                       doctest::Contains("does not name a shared-memory segment"), Error);
  // A name that is not a segment's does not decode; a segment that fails the checks is an offer
  // that cannot be trusted (the peer's), not a wrong argument of the caller.
  CHECK(error_code_of([] { ShmChannel::open("/rankmesh-no-such-segment"); }) == Errc::malformed);
  auto second = ShmChannel::create();
  auto first_sender = ShmChannel::open(second.name);
  CHECK(error_code_of([&] { ShmChannel::open(second.name); }) == Errc::peer_failed);
}

TEST_CASE("shm: open takes only a 0600 segment of this user offered by the announced peer") {
  SUBCASE("a segment another user could open (mode 0644) is refused") {
    auto created = ShmChannel::create();
    REQUIRE(fchmod(handoff_of(created.name), 0644) == 0);
    CHECK_THROWS_WITH_AS(ShmChannel::open(created.name), doctest::Contains("has mode 0644, not 0600"),
                         Error);
    CHECK(error_code_of([&] { ShmChannel::open(created.name); }) == Errc::peer_failed);
  }
  SUBCASE("a segment of another user is refused") {
    if (geteuid() != 0) {
      MESSAGE("skipped: needs root to give a segment to another user");
      return;
    }
    auto created = ShmChannel::create();
    REQUIRE(fchown(handoff_of(created.name), 65534, 65534) == 0);
    CHECK_THROWS_WITH_AS(ShmChannel::open(created.name),
                         doctest::Contains("belongs to uid 65534, not to this user"), Error);
  }
  SUBCASE("a segment offered by another pid than the peer announced is refused") {
    auto created = ShmChannel::create();
    ShmOptions options;
    options.peer_pid = getpid() + 1;
    CHECK_THROWS_WITH_AS(ShmChannel::open(created.name, options),
                         doctest::Contains(("is offered by pid " + std::to_string(getpid()) +
                                            ", not by pid " + std::to_string(getpid() + 1)).c_str()),
                         Error);
    CHECK(error_code_of([&] { ShmChannel::open(created.name, options); }) == Errc::peer_failed);
  }
  SUBCASE("a sender other than the announced peer fails the receiver's channel") {
    ShmOptions options;
    options.log = [](const std::string&) {};
    auto created = ShmChannel::create(options);
    created.channel->expect_sender(getpid() + 1);
    auto sender = ShmChannel::open(created.name);
    CHECK_THROWS_WITH_AS(created.channel->wait_peer(deadline_after(configured(5s))),
                         doctest::Contains(("attached from pid " + std::to_string(getpid()) +
                                            ", but the peer announced pid " +
                                            std::to_string(getpid() + 1)).c_str()),
                         ChannelClosed);
  }
}

// ---- shm, two processes -----------------------------------------------------------------------

TEST_CASE("shm: frames arrive in order through many wraps of the ring, between two processes") {
  ShmOptions options = named("rank 1");
  options.ring_bytes = 64 << 10;
  options.inline_threshold = 4 << 10;
  auto created = ShmChannel::create(options);
  constexpr std::uint64_t kFrames = 5000;
  Child child([&] {
    auto sender = ShmChannel::open(created.name, named("rank 0"));
    for (std::uint64_t i = 0; i < kFrames; ++i) {
      Frame f = wrap_frame(i);
      sender->send(f, deadline_after(20s));
    }
    CHILD_REQUIRE(sender->flush(deadline_after(20s)));
    return 0;
  });
  Frame got;
  std::uint64_t bad = kFrames;
  for (std::uint64_t i = 0; i < kFrames; ++i) {
    REQUIRE(created.channel->recv(got, deadline_after(20s)));
    if (!frame_ok(got, i) && bad == kFrames) bad = i;
  }
  CHECK(bad == kFrames);
  CHECK(created.channel->peer_pid() == child.pid());
  CHECK(child.wait() == 0);
  created.channel.reset();
  CHECK(shm_leftovers({getpid(), child.pid()}).empty());
}

TEST_CASE("shm: metadata-only frames, empty tensors, small inline and 64 MiB payloads, byte-exact") {
  for (bool single_copy : {true, false}) {
    CAPTURE(single_copy);
    auto created = ShmChannel::create(named("rank 1"));
    Child child([&] {
      ShmOptions options = named("rank 0");
      options.single_copy = single_copy;
      auto sender = ShmChannel::open(created.name, options);
      CHILD_REQUIRE(sender->wait_peer(deadline_after(10s)));
      CHILD_REQUIRE(sender->single_copy() == single_copy);
      Frame f;
      f.metadata = {1, 2, 3, 4, 5};  // metadata only
      sender->send(f, deadline_after(10s));
      Frame nothing;
      sender->send(nothing, deadline_after(10s));
      Frame empties;
      empties.tensors.push_back(Tensor::empty({0}, DType::f32));
      empties.tensors.push_back(Tensor::empty({3, 0, 2}, DType::bf16));
      empties.tensors.push_back(patterned({}, DType::i64, 2, 2));  // a scalar: one element
      sender->send(empties, deadline_after(10s));
      Frame mixed;
      mixed.metadata.assign(1000, 7);
      mixed.tensors.push_back(patterned({25}, DType::f32, 3, 0));
      mixed.tensors.push_back(patterned({16, 1024}, DType::f32, 3, 1));  // 64 KiB: still inline
      mixed.tensors.push_back(patterned({16, 1024, 1024}, DType::f32, 3, 2));  // 64 MiB
      mixed.tensors.push_back(patterned({3}, DType::u8, 3, 3));
      sender->send(mixed, deadline_after(10s));
      CHILD_REQUIRE(sender->flush(deadline_after(20s)));
      return 0;
    });
    ShmChannel& receiver = *created.channel;
    REQUIRE(receiver.wait_peer(deadline_after(10s)));
    CHECK(receiver.single_copy());  // the receiver may read the sender; the sender decides

    Frame got;
    REQUIRE(receiver.recv(got, deadline_after(10s)));
    CHECK(got.metadata == std::vector<std::uint8_t>{1, 2, 3, 4, 5});
    CHECK(got.tensors.empty());
    REQUIRE(receiver.recv(got, deadline_after(10s)));
    CHECK(got.metadata.empty());
    CHECK(got.tensors.empty());
    REQUIRE(receiver.recv(got, deadline_after(10s)));
    REQUIRE(got.tensors.size() == 3);
    CHECK(got.tensors[0].shape() == Shape{0});
    CHECK(got.tensors[1].shape() == Shape{3, 0, 2});
    CHECK(got.tensors[1].dtype() == DType::bf16);
    CHECK(got.tensors[2].shape() == Shape{});
    CHECK(matches(got.tensors[2], 2, 2));
    REQUIRE(receiver.recv(got, deadline_after(20s)));
    CHECK(got.metadata == std::vector<std::uint8_t>(1000, 7));
    REQUIRE(got.tensors.size() == 4);
    CHECK(got.tensors[2].shape() == Shape{16, 1024, 1024});
    for (std::size_t i = 0; i < 4; ++i) {
      CAPTURE(i);
      CHECK(matches(got.tensors[i], 3, i));
    }
    CHECK(child.wait() == 0);
    created.channel.reset();
    CHECK(shm_leftovers({getpid(), child.pid()}).empty());
  }
}

TEST_CASE("shm: send returns while the receiver has not read a lent payload, flush waits for it") {
  Pipe names;
  Pipe go;
  Child child([&] {
    auto created = ShmChannel::create(named("rank 0"));
    names.put(created.name);
    CHILD_REQUIRE(created.channel->wait_peer(deadline_after(10s)));
    CHILD_REQUIRE(go.get() == "go");
    Frame got;
    CHILD_REQUIRE(created.channel->recv(got, deadline_after(10s)));
    CHILD_REQUIRE(got.tensors.size() == 1 && matches(got.tensors[0], 5, 0));
    return 0;
  });
  const std::string name = names.get();
  REQUIRE_FALSE(name.empty());
  auto sender = ShmChannel::open(name, named("rank 1"));
  REQUIRE(sender->wait_peer(deadline_after(10s)));
  REQUIRE(sender->single_copy());
  Frame f;
  f.tensors.push_back(patterned({k64MiB}, DType::u8, 5, 0));
  sender->send(f, deadline_after(10s));  // the receiver is not receiving yet
  CHECK_FALSE(sender->flush(deadline_after(20ms)));
  go.put("go");
  CHECK(sender->flush(deadline_after(10s)));
  CHECK(child.wait() == 0);
  CHECK(shm_leftovers({getpid(), child.pid()}).empty());
}

TEST_CASE("shm: the pool reuses memory — a second receive of the same size gets a recycled block") {
  BufferPool pool;
  ShmOptions options = named("rank 1");
  options.allocator = pool.allocator();
  auto created = ShmChannel::create(options);
  Child child([&] {
    auto sender = ShmChannel::open(created.name, named("rank 0"));
    CHILD_REQUIRE(sender->wait_peer(deadline_after(10s)));
    for (std::uint64_t i = 0; i < 2; ++i) {
      Frame f;
      f.tensors.push_back(patterned({k64MiB / 4}, DType::f32, i, 0));
      sender->send(f, deadline_after(10s));
    }
    CHILD_REQUIRE(sender->flush(deadline_after(10s)));
    return 0;
  });
  Frame got;
  REQUIRE(created.channel->recv(got, deadline_after(10s)));
  CHECK(matches(got.tensors.at(0), 0, 0));
  void* first = got.tensors[0].data();
  got.tensors.clear();  // the block goes back to the pool
  REQUIRE(created.channel->recv(got, deadline_after(10s)));
  CHECK(got.tensors.at(0).data() == first);
  CHECK(matches(got.tensors[0], 1, 0));
  CHECK(pool.stats().reused >= 1);
  CHECK(child.wait() == 0);
}

TEST_CASE("shm: where the receiver may not read the sender's memory, payloads go through the ring") {
  if (getuid() != 0) {
    MESSAGE("skipped: needs root to run both sides as another user");
    return;
  }
  // Both sides run as one unprivileged user (the opener takes only this user's segments); the
  // sender is not dumpable, so the receiver may not read its memory (ptrace access is denied).
  auto become_nobody = [](bool dumpable) {
    return setgid(65534) == 0 && setuid(65534) == 0 && prctl(PR_SET_DUMPABLE, dumpable ? 1 : 0) == 0;
  };
  Pipe names;
  Child receiver([&] {
    if (!become_nobody(true)) return 3;
    auto created = ShmChannel::create(named("rank 0"));
    names.put(created.name);
    CHILD_REQUIRE(created.channel->wait_peer(deadline_after(configured(10s))));
    CHILD_REQUIRE(!created.channel->single_copy());
    Frame got;
    CHILD_REQUIRE(created.channel->recv(got, deadline_after(configured(20s))));
    CHILD_REQUIRE(got.tensors.size() == 1 && matches(got.tensors[0], 9, 0));
    return 0;
  });
  const std::string name = names.get();
  if (name.empty()) {
    const int code = receiver.wait();
    if (code == 3) {
      MESSAGE("skipped: setuid is not permitted here");
      return;
    }
    FAIL("child gave no name, exit code " << code);
  }
  Child sender([&] {
    if (!become_nobody(false)) return 3;
    auto channel = ShmChannel::open(name, named("rank 1"));
    CHILD_REQUIRE(channel->wait_peer(deadline_after(configured(10s))));
    CHILD_REQUIRE(!channel->single_copy());
    Frame f;
    f.tensors.push_back(patterned({k64MiB}, DType::u8, 9, 0));
    channel->send(f, deadline_after(configured(20s)));
    CHILD_REQUIRE(channel->flush(deadline_after(configured(20s))));
    return 0;
  });
  CHECK(sender.wait() == 0);
  CHECK(receiver.wait() == 0);
  CHECK(shm_leftovers({getpid(), receiver.pid(), sender.pid()}).empty());
}

TEST_CASE("shm: close wakes the waiting peer with the reason, either way") {
  SUBCASE("the sender closes while the receiver waits") {
    auto created = ShmChannel::create(named("rank 1"));
    Child child([&] {
      auto sender = ShmChannel::open(created.name, named("rank 0"));
      CHILD_REQUIRE(sender->wait_peer(deadline_after(10s)));
      sender->close("stage 0 is shutting down");
      return 0;
    });
    Frame got;
    CHECK_THROWS_WITH_AS(created.channel->recv(got, deadline_after(10s)),
                         "stage 0 is shutting down", ChannelClosed);
    CHECK(child.wait() == 0);
    CHECK_THROWS_WITH_AS(created.channel->recv(got, deadline_after(10s)),
                         "stage 0 is shutting down", ChannelClosed);
    CHECK(shm_leftovers({getpid(), child.pid()}).empty());
  }
  SUBCASE("the receiver closes while the sender waits on a full ring") {
    Pipe names;
    Pipe go;
    Child child([&] {
      ShmOptions options = named("rank 0");
      options.ring_bytes = 64 << 10;
      auto created = ShmChannel::create(options);
      names.put(created.name);
      CHILD_REQUIRE(created.channel->wait_peer(deadline_after(10s)));
      CHILD_REQUIRE(go.get() == "go");
      created.channel->close("stage 1 is shutting down");
      return 0;
    });
    const std::string name = names.get();
    REQUIRE_FALSE(name.empty());
    auto sender = ShmChannel::open(name, named("rank 1"));
    Frame f;
    f.metadata.assign(30000, 1);
    Frame copy = f;
    sender->send(copy, deadline_after(1s));
    copy = f;
    sender->send(copy, deadline_after(1s));
    copy = f;
    CHECK_THROWS_AS(sender->send(copy, deadline_after(10ms)), ChannelTimeout);  // full now
    go.put("go");
    // Not woken, the send would time out (ChannelTimeout) at its deadline.
    CHECK_THROWS_WITH_AS(sender->send(copy, deadline_after(configured(10s))),
                         "stage 1 is shutting down", ChannelClosed);
    CHECK(child.wait() == 0);
    CHECK(shm_leftovers({getpid(), child.pid()}).empty());
  }
  CHECK(shm_leftovers({getpid()}).empty());
}

TEST_CASE("shm: a peer killed in the middle of a 64 MiB transfer fails the survivor within 20 liveness checks") {
  // A parked wait checks the peer every liveness_interval; a busy one between chunks.
  const auto kNoticed = configured(20 * ShmOptions{}.liveness_interval);
  // Lent as they are, through the ring, and borrowed (the receiver waits for the sender's copy).
  for (const char* mode : {"lent", "ring", "borrowed"}) {
    CAPTURE(mode);
    const bool single_copy = std::string(mode) != "ring";
    const bool borrowed = std::string(mode) == "borrowed";
    SUBCASE("the sender dies") {
      auto created = ShmChannel::create(named("rank 0"));
      Child child([&]() -> int {
        ShmOptions options = named("rank 1");
        options.single_copy = single_copy;
        auto sender = ShmChannel::open(created.name, options);
        CHILD_REQUIRE(sender->wait_peer(deadline_after(10s)));
        Frame f;
        const Tensor payload = patterned({k64MiB}, DType::u8, 0, 0);
        while (true) {
          f.tensors.assign(1, payload);
          if (borrowed) f.borrowed = {0};
          sender->send(f, deadline_after(30s));
        }
      });
      ShmChannel& receiver = *created.channel;
      REQUIRE(receiver.wait_peer(deadline_after(10s)));
      Frame got;
      REQUIRE(receiver.recv(got, deadline_after(10s)));
      REQUIRE(receiver.recv(got, deadline_after(10s)));
      // The sender sends 64 MiB frames without end: killed now, it dies in the middle of one.
      const Clock::time_point killed_at = Clock::now();
      child.kill();
      std::string message;
      Clock::time_point failed_at{};
      try {
        while (true) receiver.recv(got, deadline_after(10s));
      } catch (const ChannelClosed& e) {
        failed_at = Clock::now();
        message = e.what();
      }
      CHECK(failed_at - killed_at < kNoticed);
      CHECK(message == "rank 0 (pid " + std::to_string(child.pid()) + ") died");
      CHECK_THROWS_AS(receiver.recv(got, deadline_after(1s)), ChannelClosed);
      CHECK(child.wait() == -SIGKILL);
    }
    SUBCASE("the receiver dies") {
      Pipe names;
      Child child([&]() -> int {
        auto created = ShmChannel::create(named("rank 1"));
        names.put(created.name);
        Frame got;
        while (true) created.channel->recv(got, deadline_after(30s));
      });
      const std::string name = names.get();
      REQUIRE_FALSE(name.empty());
      ShmOptions options = named("rank 0");
      options.single_copy = single_copy;
      options.max_pending_bytes = 2 * k64MiB;
      auto sender = ShmChannel::open(name, options);
      REQUIRE(sender->wait_peer(deadline_after(10s)));
      const Tensor payload = patterned({k64MiB}, DType::u8, 0, 0);
      Frame f;
      for (int i = 0; i < 3; ++i) {
        f.tensors.assign(1, payload);
        if (borrowed) f.borrowed = {0};
        sender->send(f, deadline_after(10s));
      }
      // The receiver takes frames without end: killed now, it dies in the middle of one.
      const Clock::time_point killed_at = Clock::now();
      child.kill();
      std::string message;
      Clock::time_point failed_at{};
      try {
        while (true) {
          f.tensors.assign(1, payload);
          if (borrowed) f.borrowed = {0};
          sender->send(f, deadline_after(10s));
        }
      } catch (const ChannelClosed& e) {
        failed_at = Clock::now();
        message = e.what();
      }
      CHECK(failed_at - killed_at < kNoticed);
      CHECK(message == "rank 0 (pid " + std::to_string(child.pid()) + ") died");
      CHECK_THROWS_AS(sender->send(f, deadline_after(1s)), ChannelClosed);
      CHECK(child.wait() == -SIGKILL);
      CHECK(shm_leftovers({getpid(), child.pid()}).empty());
    }
  }
  CHECK(shm_leftovers({getpid()}).empty());
}

TEST_CASE("shm: no /dev/shm leftovers when either side crashes around set-up") {
  SUBCASE("the creator is killed before the sender attaches: nothing is left, open says why") {
    Pipe names;
    Child child([&]() -> int {
      auto created = ShmChannel::create(named("rank 1"));
      names.put(created.name);
      while (true) pause();
    });
    const std::string name = names.get();
    REQUIRE_FALSE(name.empty());
    child.kill();
    CHECK(child.wait() == -SIGKILL);
    CHECK(shm_leftovers({child.pid()}).empty());
    CHECK_FALSE(offered(name));
    CHECK_THROWS_WITH_AS(ShmChannel::open(name, named("rank 0")),
                         doctest::Contains(("(its creator, pid " + std::to_string(child.pid()) +
                                            ", has exited or no longer offers it)").c_str()),
                         std::system_error);
  }
  SUBCASE("the creator is killed after the sender attached: nothing is left") {
    Pipe names;
    Child child([&]() -> int {
      auto created = ShmChannel::create(named("rank 1"));
      names.put(created.name);
      CHILD_REQUIRE(created.channel->wait_peer(deadline_after(configured(10s))));
      while (true) pause();
    });
    const std::string name = names.get();
    REQUIRE_FALSE(name.empty());
    auto sender = ShmChannel::open(name, named("rank 0"));
    REQUIRE(sender->wait_peer(deadline_after(configured(10s))));
    child.kill();
    CHECK(child.wait() == -SIGKILL);
    CHECK(shm_leftovers({child.pid(), getpid()}).empty());
    Frame f;
    f.metadata = {1};
    sender->send(f, deadline_after(configured(10s)));  // into the ring; nobody will take it
    CHECK_THROWS_WITH_AS(sender->flush(deadline_after(configured(10s))),
                         doctest::Contains(("rank 0 (pid " + std::to_string(child.pid()) + ") died").c_str()),
                         ChannelClosed);
  }
  SUBCASE("the sender dies before attaching: the creator stops offering it when it closes") {
    auto created = ShmChannel::create(named("rank 1"));
    Child child([&] { return 0; });
    CHECK(child.wait() == 0);
    Frame f;
    CHECK_FALSE(created.channel->recv(f, deadline_after(10ms)));
    CHECK(offered(created.name));
    created.channel->close("rank 1 gave up waiting");
    CHECK_FALSE(offered(created.name));
  }
  SUBCASE("the sender is killed after attaching: the segment is no longer offered") {
    auto created = ShmChannel::create(named("rank 0"));
    Child child([&] {
      auto sender = ShmChannel::open(created.name);
      ::kill(getpid(), SIGKILL);
      return 0;
    });
    CHECK(child.wait() == -SIGKILL);
    Frame f;
    CHECK_THROWS_WITH_AS(created.channel->recv(f, deadline_after(configured(10s))),
                         doctest::Contains(("rank 0 (pid " + std::to_string(child.pid()) + ") died").c_str()),
                         ChannelClosed);
    CHECK_FALSE(offered(created.name));
  }
  CHECK(shm_leftovers({getpid()}).empty());
}
