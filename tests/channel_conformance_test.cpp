// What every transport's channels promise (channel.hpp), checked the same way for each: two
// ranks of this process joined through the transport's own endpoints and a LocalExchange, as an
// embedded runtime joins them. What only one transport does stays in its own test file
// (inproc_channel_test, shm_channel_test, tcp_channel_test).
#include <doctest/doctest.h>

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "inproc/inproc_transport.hpp"
#include "local_exchange.hpp"
#include "pipe_transport/pipe_transport.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/event.hpp"
#include "rankmesh/runtime.hpp"
#include "shm/shm_transport.hpp"
#include "shm_test_support.hpp"
#include "tcp/tcp_transport.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

// The conformance suite's table: the runtime's transports and the test-only ones, each as the
// function that returns it. A new transport is one more entry.
#define RANKMESH_CONFORMING_TRANSPORTS(X) \
  X(inproc, inproc_transport)             \
  X(shm, shm_transport)                   \
  X(tcp, tcp_transport)                   \
  X(pipe, test::pipe_transport)

namespace {

#define RANKMESH_TRANSPORT_TAG(name, get) \
  struct Conforming_##name {              \
    static const Transport& transport() { return get(); } \
  };
RANKMESH_CONFORMING_TRANSPORTS(RANKMESH_TRANSPORT_TAG)
#undef RANKMESH_TRANSPORT_TAG

#define RANKMESH_TRANSPORT_TUPLE(name, get) std::tuple<Conforming_##name>{},
using ConformingTransports =
    decltype(std::tuple_cat(RANKMESH_CONFORMING_TRANSPORTS(RANKMESH_TRANSPORT_TUPLE) std::tuple<>{}));
#undef RANKMESH_TRANSPORT_TUPLE

}  // namespace

#define RANKMESH_TRANSPORT_NAME(name, get) TYPE_TO_STRING_AS(#name, Conforming_##name);
RANKMESH_CONFORMING_TRANSPORTS(RANKMESH_TRANSPORT_NAME)
#undef RANKMESH_TRANSPORT_NAME

namespace {

// The deadline of a wait that should end well before it: `base` times RANKMESH_TIMEOUT_SCALE.
Deadline within(std::chrono::milliseconds base) { return deadline_after(scaled_timeout(base)); }

// Ranks 0 and 1 of one process, connected through `transport`; rank 1 receives within
// `rank1_limits`.
class Connected {
public:
  explicit Connected(const Transport& transport, FrameLimits limits = {})
      : Connected(transport, limits, limits) {}
  Connected(const Transport& transport, FrameLimits limits, FrameLimits rank1_limits) : exchange_(2) {
    std::vector<RankPlace> places(2, RankPlace{"this node", "this process"});
    for (int rank = 0; rank < 2; ++rank) {
      TransportContext context;
      context.rank = rank;
      context.world_size = 2;
      context.secret = "conformance secret";
      context.limits = rank == 1 ? rank1_limits : limits;
      context.log = [this](const std::string& line) {
        std::lock_guard lock(log_mutex_);
        log_ += line + "\n";
      };
      endpoints_[rank] = transport.open(context);
    }
    std::exception_ptr failure;
    std::thread other([&] {
      try {
        pairs_[1] = endpoints_[1]->connect({0}, places, exchange_.rank(1), within(10s)).at(0);
      } catch (...) {
        failure = std::current_exception();
      }
    });
    pairs_[0] = endpoints_[0]->connect({1}, places, exchange_.rank(0), within(10s)).at(0);
    other.join();
    if (failure) std::rethrow_exception(failure);
  }

  // The channel rank `from` sends to the other through, and the one rank `to` receives through.
  Channel& out(int from) { return *pairs_[from].outbound; }
  Channel& in(int to) { return *pairs_[to].inbound; }
  // What the transports logged.
  std::string log() {
    std::lock_guard lock(log_mutex_);
    return log_;
  }

private:
  std::mutex log_mutex_;
  std::string log_;
  LocalExchange exchange_;
  std::unique_ptr<TransportEndpoint> endpoints_[2];
  ChannelPair pairs_[2];
};

std::uint8_t pattern(std::uint64_t frame, std::size_t tensor, std::size_t byte) {
  return static_cast<std::uint8_t>(frame * 131 + tensor * 29 + byte * 7 + (byte >> 9));
}

Tensor patterned(Shape shape, DType dtype, std::uint64_t frame, std::size_t index = 0) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* bytes = static_cast<std::uint8_t*>(t.data());
  for (std::size_t i = 0; i < t.nbytes(); ++i) bytes[i] = pattern(frame, index, i);
  return t;
}

bool matches(const Tensor& t, std::uint64_t frame, std::size_t index = 0) {
  const auto* bytes = static_cast<const std::uint8_t*>(t.data());
  for (std::size_t i = 0; i < t.nbytes(); ++i)
    if (bytes[i] != pattern(frame, index, i)) return false;
  return true;
}

Frame small_frame(std::uint64_t seq) {
  Frame f;
  f.header = FrameHeader{3, 1, seq, 1};
  f.metadata.assign(static_cast<std::size_t>(seq % 17), static_cast<std::uint8_t>(seq));
  if (seq % 2 == 1) f.tensors.push_back(patterned({16}, DType::f32, seq));
  return f;
}

// Whether rank 0's sends into a direction its peer closed fail with ChannelClosed, at once or
// once the sender notices (within 1000 frames).
bool sending_is_refused(Connected& link) {
  for (int i = 0; i < 1000; ++i) {
    Frame f = small_frame(1);
    try {
      link.out(0).send(f, within(1s));
    } catch (const ChannelClosed&) {
      return true;
    } catch (const ChannelTimeout&) {
      return false;
    }
  }
  return false;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("channel conformance: frames arrive in order across threads, many of them", T,
                          ordering) {
  Connected link(T::transport());
  constexpr int kFrames = 10000;
  std::thread producer([&] {
    Frame f;
    for (int i = 0; i < kFrames; ++i) {
      f.header.seq = static_cast<std::uint64_t>(i);
      f.metadata.assign(static_cast<std::size_t>(i % 7), static_cast<std::uint8_t>(i));
      link.out(0).send(f, within(10s));
    }
  });
  Frame got;
  for (int i = 0; i < kFrames; ++i) {
    REQUIRE(link.in(1).recv(got, within(10s)));
    REQUIRE(got.header.seq == static_cast<std::uint64_t>(i));
    REQUIRE(got.metadata.size() == static_cast<std::size_t>(i % 7));
  }
  producer.join();
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: frames travel both ways at once, in order, byte-exact", T,
                          both_ways) {
  Connected link(T::transport());
  constexpr int kFrames = 500;
  auto pump = [&](int from, int to) {
    std::thread sender([&] {
      for (int i = 0; i < kFrames; ++i) {
        Frame f = small_frame(static_cast<std::uint64_t>(i));
        link.out(from).send(f, within(10s));
        CHECK(f.tensors.empty());
      }
    });
    Frame got;
    for (int i = 0; i < kFrames; ++i) {
      REQUIRE(link.in(to).recv(got, within(10s)));
      const Frame want = small_frame(static_cast<std::uint64_t>(i));
      REQUIRE(got.header.seq == want.header.seq);
      REQUIRE(got.header.group == want.header.group);
      REQUIRE(got.header.src == want.header.src);
      REQUIRE(got.metadata == want.metadata);
      REQUIRE(got.tensors.size() == want.tensors.size());
      for (std::size_t t = 0; t < got.tensors.size(); ++t)
        REQUIRE(equal(got.tensors[t], want.tensors[t]));
    }
    sender.join();
  };
  std::thread other_way([&] { pump(1, 0); });
  pump(0, 1);
  other_way.join();
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: empty frames, empty tensors and 64 MiB payloads, both ways at once", T,
                          sizes) {
  Connected link(T::transport());
  constexpr std::size_t kBytes = std::size_t{64} << 20;
  const Tensor up = patterned({static_cast<std::int64_t>(kBytes)}, DType::u8, 1);
  const Tensor down = patterned({static_cast<std::int64_t>(kBytes)}, DType::u8, 2);
  auto send_all = [&](int from, const Tensor& big) {
    Frame nothing;
    link.out(from).send(nothing, within(10s));
    Frame metadata_only;
    metadata_only.metadata = {9, 8, 7};
    link.out(from).send(metadata_only, within(10s));
    Frame f;
    f.header = FrameHeader{1, 2, 3, 4};
    f.metadata = {1, 2, 3};
    f.tensors = {big, Tensor::empty({0, 5}, DType::f16)};
    link.out(from).send(f, within(60s));
    CHECK(link.out(from).wait_released(within(60s)));
  };
  std::thread up_sender([&] { send_all(0, up); });
  std::thread down_sender([&] { send_all(1, down); });
  for (int to : {1, 0}) {
    Frame got;
    REQUIRE(link.in(to).recv(got, within(60s)));
    CHECK(got.metadata.empty());
    CHECK(got.tensors.empty());
    REQUIRE(link.in(to).recv(got, within(60s)));
    CHECK(got.metadata == std::vector<std::uint8_t>{9, 8, 7});
    CHECK(got.tensors.empty());
    REQUIRE(link.in(to).recv(got, within(60s)));
    CHECK(got.header.group == 1);
    CHECK(got.header.op == 2);
    CHECK(got.header.seq == 3);
    CHECK(got.header.src == 4);
    CHECK(got.metadata == std::vector<std::uint8_t>{1, 2, 3});
    REQUIRE(got.tensors.size() == 2);
    CHECK(equal(got.tensors[0], to == 1 ? up : down));
    CHECK(got.tensors[1].shape() == Shape{0, 5});
    CHECK(got.tensors[1].dtype() == DType::f16);
  }
  up_sender.join();
  down_sender.join();
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: a frame matching the landing is read into the given tensors, others are not", T,
                          landing) {
  Connected link(T::transport());
  const bool lands = link.in(1).traits().lands_payloads;
  for (std::int64_t elements : {256, 1 << 16}) {  // 1 KiB (copied at once by shm), 256 KiB
    CAPTURE(elements);
    Tensor target = Tensor::empty({elements}, DType::f32);
    Landing landing{7, 3, 1, {target}};
    link.in(1).land(&landing);
    std::thread sender([&] {  // a channel may hold less than the three frames
      for (auto [seq, n] : {std::pair<std::uint64_t, std::int64_t>{0, elements}, {1, elements / 2}, {1, elements}}) {
        Frame f;
        f.header = FrameHeader{7, 3, seq, 1};
        f.tensors.push_back(patterned({n}, DType::f32, seq));
        link.out(0).send(f, within(5s));
      }
    });
    Frame got;
    REQUIRE(link.in(1).recv(got, within(5s)));  // seq 0: not the landing's
    CHECK(got.tensors[0].data() != target.data());
    REQUIRE(link.in(1).recv(got, within(5s)));  // seq 1, other shape
    CHECK(got.tensors[0].data() != target.data());
    REQUIRE(link.in(1).recv(got, within(5s)));
    sender.join();
    CHECK(matches(got.tensors[0], 1));
    if (lands) {
      CHECK(got.tensors[0].data() == target.data());
      CHECK(matches(target, 1));
    } else {
      CHECK(got.tensors[0].data() != target.data());  // the channel ignores landings
    }
    link.in(1).land(nullptr);
  }
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: a landing withdrawn before its frame is whole is not written after", T,
                          withdrawn_landing) {
  // A receive that ends at its deadline withdraws its landing; what of the frame arrives later
  // must not reach the tensor, which the caller (a broadcast filling its own tensor) has back.
  Connected link(T::transport());
  const std::int64_t elements = 4 << 20;  // 16 MiB: more than a socket buffer or a ring
  Tensor target = Tensor::empty({elements}, DType::f32);
  Landing landing{7, 3, 1, {target}};
  link.in(1).land(&landing);
  Frame sent;
  sent.header = FrameHeader{7, 3, 1, 1};
  sent.tensors.push_back(patterned({elements}, DType::f32, 2));
  std::thread sender([&] { link.out(0).send(sent, within(60s)); });
  // The sender has filled what the channel holds (a socket's buffers) and waits for room: a
  // receive of 1 ms then ends in the middle of the payload where bytes come as they are read.
  std::this_thread::sleep_for(50ms);
  Frame got;
  const bool whole = link.in(1).recv(got, deadline_after(1ms));
  link.in(1).land(nullptr);
  if (whole) {  // it all came within the receive (shm pulls a lent payload at once)
    CHECK(matches(got.tensors[0], 2));
  } else {
    const std::vector<std::byte> before(static_cast<std::byte*>(target.data()),
                                        static_cast<std::byte*>(target.data()) + target.nbytes());
    REQUIRE(link.in(1).recv(got, within(60s)));
    CHECK(got.tensors[0].data() != target.data());
    CHECK(std::memcmp(target.data(), before.data(), before.size()) == 0);
    CHECK(matches(got.tensors[0], 2));  // what arrived before the withdrawal is kept too
  }
  sender.join();
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: a landing set again for each slice of one receive lands the whole frame", T,
                          sliced_landing) {
  // A wait in slices (watchdog.hpp wait_watched, PeerLinks::receive) lands, receives until the
  // slice's end and withdraws, again and again: the frame must arrive whole, in the landing.
  Connected link(T::transport());
  const bool lands = link.in(1).traits().lands_payloads;
  const std::int64_t elements = 4 << 20;  // 16 MiB: more than a socket buffer or a ring
  Tensor target = Tensor::empty({elements}, DType::f32);
  Landing landing{7, 3, 1, {target}};
  Frame sent;
  sent.header = FrameHeader{7, 3, 1, 1};
  sent.tensors.push_back(patterned({elements}, DType::f32, 3));
  std::thread sender([&] { link.out(0).send(sent, within(60s)); });
  std::this_thread::sleep_for(50ms);
  const Deadline give_up = within(60s);
  Frame got;
  bool whole = false;
  while (!whole && Clock::now() < give_up) {
    link.in(1).land(&landing);
    whole = link.in(1).recv(got, deadline_after(1ms));
    link.in(1).land(nullptr);
  }
  sender.join();
  REQUIRE(whole);
  CHECK(matches(got.tensors[0], 3));
  if (lands) CHECK(got.tensors[0].data() == target.data());
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: a sent tensor is the sender's again once copied or released", T,
                          lending) {
  Connected link(T::transport());
  const ChannelTraits& traits = link.out(0).traits();
  for (std::int64_t bytes : {1 << 10, 1 << 20}) {
    CAPTURE(bytes);
    Tensor sent = patterned({bytes}, DType::u8, 5);
    Tensor received;
    std::thread receiver([&] {
      Frame got;
      CHECK(link.in(1).recv(got, within(5s)));
      if (got.tensors.size() == 1) received = got.tensors[0];
    });
    Frame f;
    f.tensors.push_back(sent);
    link.out(0).send(f, within(5s));
    CHECK(f.tensors.empty());
    if (traits.shares_tensors) {
      // The receiver gets the tensor itself: nothing is lent, nothing released.
      CHECK(link.out(0).wait_released(Clock::now()));
      receiver.join();
      CHECK(received.data() == sent.data());
      continue;
    }
    if (traits.reads_after_send(static_cast<std::size_t>(bytes))) {
      // Lent until the receiver (or the kernel) has it.
      CHECK(link.out(0).wait_released(within(5s)));
      std::memset(sent.data(), 0, sent.nbytes());
    } else {
      // Copied before send returned: the sender may overwrite it at once.
      std::memset(sent.data(), 0, sent.nbytes());
    }
    receiver.join();
    REQUIRE(received.defined());
    CHECK(matches(received, 5));
  }
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: recv returns false at its deadline", T, deadline) {
  Connected link(T::transport());
  Frame f;
  const auto before = Clock::now();
  CHECK_FALSE(link.in(1).recv(f, deadline_after(30ms)));
  CHECK(Clock::now() - before >= 30ms);
  CHECK_FALSE(link.in(0).recv(f, deadline_after(5ms)));
  // The channel still works.
  Frame sent = small_frame(3);
  link.out(0).send(sent, within(5s));
  REQUIRE(link.in(1).recv(f, within(5s)));
  CHECK(f.metadata == small_frame(3).metadata);
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: close wakes a receiver parked in recv, with the reason", T,
                          close) {
  Connected link(T::transport());
  std::atomic<pid_t> receiving{0};
  std::thread closer([&] {
    const Deadline parked_by = within(10s);
    while (!rankmesh::testing::thread_sleeps(receiving) && Clock::now() < parked_by)
      std::this_thread::yield();
    link.in(1).close("rank 3 died");
  });
  receiving = static_cast<pid_t>(gettid());
  Frame got;
  CHECK_THROWS_WITH_AS(link.in(1).recv(got, within(10s)), doctest::Contains("rank 3 died"),
                       ChannelClosed);
  closer.join();
  CHECK_THROWS_AS(link.in(1).recv(got, within(1s)), ChannelClosed);
  // What the peer sends into the closed direction fails too, at once or once it notices.
  CHECK(sending_is_refused(link));
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: a peer that closes its end: what it sent arrives, then ChannelClosed", T,
                          peer_death) {
  Connected link(T::transport());
  Frame f = small_frame(2);
  link.out(0).send(f, within(1s));
  link.out(0).close("rank 0 went away");
  Frame got;
  REQUIRE(link.in(1).recv(got, within(5s)));  // what was sent still arrives
  CHECK(got.metadata == small_frame(2).metadata);
  CHECK_THROWS_AS(link.in(1).recv(got, within(5s)), ChannelClosed);
  CHECK_THROWS_AS(link.in(1).recv(got, within(5s)), ChannelClosed);
  Frame again = small_frame(3);
  CHECK_THROWS_AS(link.out(0).send(again, within(1s)), ChannelClosed);
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: a payload waits for its ready event, undefined and device tensors are refused", T,
                          payload_checks) {
  Connected link(T::transport());
  if (link.out(0).traits().shares_tensors) return;  // the tensors themselves change hands
  auto gate = Event::user();
  Tensor t = patterned({1000}, DType::f32, 0);
  t.set_ready_event(gate);
  Frame f;
  f.tensors.push_back(t);
  try {
    link.out(0).send(f, deadline_after(20ms));
    FAIL("a payload was sent before its ready event completed");
  } catch (const ChannelTimeout&) {
  } catch (const Error& e) {
    CHECK(e.code() == Errc::timeout);
  }
  CHECK(f.tensors.size() == 1);  // nothing was sent

  // The send waits for the event: complete it once the sending thread is parked on it.
  std::atomic<pid_t> sending_thread{0};
  std::atomic<bool> sent{false};
  std::thread sending([&] {
    sending_thread = static_cast<pid_t>(gettid());
    link.out(0).send(f, within(10s));
    sent = true;
  });
  const Deadline parked_by = within(10s);
  while (!rankmesh::testing::thread_sleeps(sending_thread) && Clock::now() < parked_by)
    std::this_thread::yield();
  CHECK_FALSE(sent);
  gate->complete();
  sending.join();
  CHECK(sent);
  Frame got;
  REQUIRE(link.in(1).recv(got, within(1s)));
  CHECK(matches(got.tensors.at(0), 0));

  Frame undefined;
  undefined.tensors.push_back(Tensor());
  CHECK_THROWS_AS(link.out(0).send(undefined, within(1s)), Error);
  if (!link.out(0).traits().carries_device_memory) {
    static float device_memory[4];
    Frame device;
    device.tensors.push_back(Tensor::wrap(device_memory, {4}, DType::f32,
                                          Device{DeviceType::cuda, 0}, nullptr));
    try {
      link.out(0).send(device, within(1s));
      FAIL("a device tensor was accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::invalid_argument);
      CHECK(std::string(e.what()).find("host tensors only") != std::string::npos);
    }
  }
  // The channel is still usable.
  Frame plain;
  plain.metadata = {1, 2, 3};
  link.out(0).send(plain, within(1s));
  REQUIRE(link.in(1).recv(got, within(1s)));
  CHECK(got.metadata == std::vector<std::uint8_t>{1, 2, 3});
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: frames beyond the limits are refused where they are made", T,
                          limits) {
  Connected link(T::transport(), FrameLimits{.max_metadata_bytes = 8, .max_tensors = 2,
                                             .max_payload_bytes = 1024});
  if (link.out(0).traits().shares_tensors) return;  // nothing is encoded, nothing to bound
  Frame metadata;
  metadata.metadata.assign(9, 0);
  Frame tensors;
  tensors.tensors.assign(3, Tensor::empty({1}, DType::u8));
  Frame payload;
  payload.tensors.push_back(Tensor::empty({1025}, DType::u8));
  for (Frame* f : {&metadata, &tensors, &payload}) {
    try {
      link.out(0).send(*f, within(1s));
      FAIL("a frame beyond the limits was sent");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::limit_exceeded);
    }
  }
  Frame ok;
  ok.metadata.assign(8, 1);
  ok.tensors.push_back(Tensor::empty({1024}, DType::u8));
  link.out(0).send(ok, within(1s));
  Frame got;
  REQUIRE(link.in(1).recv(got, within(5s)));
  CHECK(got.metadata.size() == 8);
}

TEST_CASE_TEMPLATE_DEFINE("channel conformance: a frame beyond what the receiver accepts closes the link, logged, naming the limit", T,
                          malformed) {
  // The sender accepts more than the receiver: for the receiver, the peer sends malformed input.
  Connected link(T::transport(), FrameLimits{}, FrameLimits{.max_metadata_bytes = 8});
  if (link.out(0).traits().shares_tensors) return;  // nothing is decoded
  Frame ok;
  ok.metadata.assign(8, 1);
  link.out(0).send(ok, within(5s));
  Frame big;
  big.metadata.assign(100, 2);
  try {
    link.out(0).send(big, within(5s));
  } catch (const ChannelClosed&) {
    // The receiver may have closed the link already.
  }
  Frame got;
  REQUIRE(link.in(1).recv(got, within(5s)));  // what came before still arrives
  CHECK(got.metadata.size() == 8);
  CHECK_THROWS_WITH_AS(link.in(1).recv(got, within(5s)), doctest::Contains("exceeds the limit of 8"),
                       ChannelClosed);
  CHECK(link.log().find("exceeds the limit of 8") != std::string::npos);
  CHECK_THROWS_AS(link.in(1).recv(got, within(1s)), ChannelClosed);  // the stream cannot resume
  CHECK(sending_is_refused(link));
}

TEST_CASE_TEMPLATE_APPLY(ordering, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(both_ways, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(sizes, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(landing, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(withdrawn_landing, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(sliced_landing, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(lending, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(deadline, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(close, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(peer_death, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(payload_checks, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(limits, ConformingTransports);
TEST_CASE_TEMPLATE_APPLY(malformed, ConformingTransports);
