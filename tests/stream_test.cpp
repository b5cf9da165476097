// Streams, events, the current stream, graph capture and the devices' copy operations.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "rankmesh/device_backend.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/event.hpp"
#include "rankmesh/graph_capture.hpp"
#include "rankmesh/stream.hpp"

#include "opaque_backend.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

namespace {

// Generous: only a broken implementation waits this long. Ordering is checked by gating work on
// user events, never by sleeping.
constexpr auto kWait = 30s;

Errc code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  FAIL("expected an Error");
  return Errc::invalid_argument;
}

std::vector<float> floats(DeviceBackend& backend, const Tensor& t) {
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  backend.copy_to_host(t, out.data(), backend.default_stream())->synchronize(kWait);
  return out;
}

Tensor make_floats(DeviceBackend& backend, const std::vector<float>& values) {
  Tensor t = backend.allocate(Shape{static_cast<std::int64_t>(values.size())}, DType::f32);
  backend.copy_from_host(values.data(), t, backend.default_stream())->synchronize(kWait);
  return t;
}

}  // namespace

TEST_SUITE("stream") {

TEST_CASE("work on one stream runs in the order it was enqueued, off the calling thread") {
  HostBackend backend;
  auto stream = backend.create_stream();
  std::vector<int> order;  // touched only by the worker until synchronize() returns
  std::thread::id worker;
  for (int i = 0; i < 100; ++i) {
    stream->enqueue([&order, &worker, i] {
      order.push_back(i);
      worker = std::this_thread::get_id();
    });
  }
  stream->synchronize(kWait);
  REQUIRE(order.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(order[static_cast<std::size_t>(i)] == i);
  CHECK(worker != std::this_thread::get_id());
  CHECK(stream->query());
}

TEST_CASE("work behind a user event does not run until complete(), though enqueue returned") {
  HostBackend backend;
  auto stream = backend.create_stream();
  auto gate = Event::user();
  std::atomic<bool> ran{false};
  stream->wait(*gate);
  stream->enqueue([&] { ran = true; });
  auto done = stream->record();
  CHECK_FALSE(ran.load());
  CHECK_FALSE(done->query());
  CHECK_FALSE(stream->query());
  gate->complete();
  done->synchronize(kWait);
  CHECK(ran.load());
  CHECK(stream->query());
}

TEST_CASE("an event recorded on an idle stream is complete at once") {
  HostBackend backend;
  auto stream = backend.create_stream();
  CHECK(stream->record()->query());
}

TEST_CASE("a stream waits on another stream's event without blocking the caller") {
  HostBackend backend;
  auto producer = backend.create_stream();
  auto consumer = backend.create_stream();
  auto gate = Event::user();
  int value = 0;  // written by the producer's worker, read by the consumer's, ordered by the event
  int seen = -1;
  producer->wait(*gate);
  producer->enqueue([&] { value = 42; });
  consumer->wait(*producer->record());
  consumer->enqueue([&] { seen = value; });
  CHECK_FALSE(consumer->query());
  gate->complete();
  consumer->synchronize(kWait);
  CHECK(seen == 42);
}

TEST_CASE("wait_stream orders later work after the other stream's work so far") {
  HostBackend backend;
  auto a = backend.create_stream();
  auto b = backend.create_stream();
  auto gate = Event::user();
  std::vector<char> order;
  std::mutex mutex;
  auto note = [&](char c) {
    std::lock_guard lock(mutex);
    order.push_back(c);
  };
  a->wait(*gate);
  a->enqueue([&] { note('a'); });
  b->wait_stream(*a);
  b->enqueue([&] { note('b'); });
  a->enqueue([&] { note('A'); });  // after the wait_stream: b does not wait for it
  b->wait_stream(*b);              // a stream waiting on itself changes nothing
  CHECK_FALSE(b->query());
  gate->complete();
  b->synchronize(kWait);
  a->synchronize(kWait);
  REQUIRE(order.size() == 3);
  CHECK(order[0] == 'a');
}

TEST_CASE("enqueues from several threads all run, each thread's in its order") {
  HostBackend backend;
  auto stream = backend.create_stream();
  std::vector<int> seen;  // touched only by the worker
  auto producer = [&](int base) {
    for (int i = 0; i < 500; ++i) stream->enqueue([&seen, v = base + i] { seen.push_back(v); });
  };
  std::thread t1(producer, 0);
  std::thread t2(producer, 1000);
  t1.join();
  t2.join();
  stream->synchronize(kWait);
  REQUIRE(seen.size() == 1000);
  int last_low = -1, last_high = 999;
  for (int v : seen) {
    if (v < 1000) {
      CHECK(v == last_low + 1);
      last_low = v;
    } else {
      CHECK(v == last_high + 1);
      last_high = v;
    }
  }
}

TEST_CASE("event synchronize and wait_for time out with an error naming what was awaited") {
  auto event = Event::user();
  CHECK_FALSE(event->wait_for(1ms));
  try {
    event->synchronize(20ms);
    FAIL("expected a timeout");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::timeout);
    CHECK(std::string(e.what()) == "user event did not complete within 20 ms");
  }
  event->complete();
  CHECK(event->wait_for(0ms));
  event->synchronize(0ms);

  HostBackend backend;
  auto stream = backend.create_stream();
  auto gate = Event::user();
  stream->wait(*gate);
  auto pending = stream->record();
  try {
    stream->synchronize(10ms);
    FAIL("expected a timeout");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::timeout);
    CHECK(std::string(e.what()) == stream->name() + " did not finish its work within 10 ms");
  }
  try {
    pending->synchronize(500us);
    FAIL("expected a timeout");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) ==
          "event recorded on " + stream->name() + " did not complete within 500 us");
  }
  gate->complete();
  stream->synchronize(kWait);
}

TEST_CASE("on_complete runs at once on a complete event, later on the completing thread") {
  auto done = Event::user();
  done->complete();
  bool ran = false;
  done->on_complete([&] { ran = true; });
  CHECK(ran);  // before on_complete returned, on this thread

  auto later = Event::user();
  std::vector<int> order;
  later->on_complete([&] { order.push_back(1); });
  later->on_complete([&] { order.push_back(2); });
  CHECK(order.empty());
  later->complete();
  CHECK(order == std::vector<int>{1, 2});
  later->complete();  // a second complete() does nothing
  CHECK(order.size() == 2);

  HostBackend backend;
  auto stream = backend.create_stream();
  auto gate = Event::user();
  std::thread::id worker;
  stream->wait(*gate);
  stream->enqueue([&] { worker = std::this_thread::get_id(); });
  auto recorded = stream->record();
  auto callback_ran = Event::user();
  std::thread::id callback_thread;
  recorded->on_complete([&] {
    callback_thread = std::this_thread::get_id();
    callback_ran->complete();
  });
  CHECK_FALSE(callback_ran->query());
  gate->complete();
  callback_ran->synchronize(kWait);
  CHECK(callback_thread == worker);  // completed by the stream's worker, which ran it there
}

TEST_CASE("events are recorded once, only user events complete by hand") {
  HostBackend backend;
  auto stream = backend.create_stream();
  auto user = Event::user();
  CHECK(code_of([&] { stream->record(*user); }) == Errc::invalid_argument);

  auto event = Event::create();
  CHECK_FALSE(event->query());
  CHECK(event->describe() == "event not yet recorded");
  stream->record(*event);
  CHECK(event->describe() == "event recorded on " + stream->name());
  CHECK(code_of([&] { stream->record(*event); }) == Errc::invalid_argument);
  CHECK(code_of([&] { event->complete(); }) == Errc::invalid_argument);
  CHECK(code_of([&] { user->fail(nullptr); }) == Errc::invalid_argument);
}

TEST_CASE("a stream waiting on an event recorded later starts once it is recorded and done") {
  HostBackend backend;
  auto a = backend.create_stream();
  auto b = backend.create_stream();
  auto event = Event::create();
  std::atomic<bool> ran{false};
  b->wait(*event);
  b->enqueue([&] { ran = true; });
  CHECK_FALSE(b->query());
  a->record(*event);
  b->synchronize(kWait);
  CHECK(ran.load());
}

TEST_CASE("failed work is sticky: later work is skipped, later events and waiters fail") {
  HostBackend backend;
  auto a = backend.create_stream();
  auto b = backend.create_stream();
  bool after = false;
  a->enqueue([] { throw std::runtime_error("boom"); });
  a->enqueue([&] { after = true; });
  auto event = a->record();
  b->wait(*event);
  CHECK_THROWS_WITH_AS(event->synchronize(kWait), "boom", std::runtime_error);
  CHECK_THROWS_WITH_AS(a->synchronize(kWait), "boom", std::runtime_error);
  CHECK_FALSE(after);
  CHECK(a->error() != nullptr);
  CHECK_THROWS_WITH_AS(b->synchronize(kWait), "boom", std::runtime_error);

  auto c = backend.create_stream();
  auto gate = Event::user();
  c->wait(*gate);
  gate->fail(std::make_exception_ptr(std::runtime_error("producer failed")));
  CHECK_THROWS_WITH_AS(c->synchronize(kWait), "producer failed", std::runtime_error);
}

TEST_CASE("destroying a stream runs its pending work, but drops work behind an unfinished wait") {
  HostBackend backend;
  int count = 0;
  {
    auto stream = backend.create_stream();
    for (int i = 0; i < 10; ++i) stream->enqueue([&] { ++count; });
  }
  CHECK(count == 10);

  auto never = Event::user();
  bool ran = false;
  std::shared_ptr<Event> behind;
  {
    auto stream = backend.create_stream();
    stream->wait(*never);
    stream->enqueue([&] { ran = true; });
    behind = stream->record();
  }
  CHECK_FALSE(ran);
  REQUIRE(behind->query());
  CHECK(code_of([&] { behind->synchronize(0ms); }) == Errc::cancelled);
}

TEST_CASE("a stream whose last owner is its own work shuts down cleanly") {
  HostBackend backend;
  // Releases the stream, then signals: the stream is destroyed on its own worker thread.
  struct LastOwner {
    std::shared_ptr<Stream> stream;
    std::shared_ptr<Event> released;
    ~LastOwner() {
      stream.reset();
      released->complete();
    }
  };
  auto released = Event::user();
  auto gate = Event::user();  // holds the work until this thread has let go of the stream
  auto stream = backend.create_stream();
  auto owner = std::shared_ptr<LastOwner>(new LastOwner{stream, released});
  stream->wait(*gate);
  stream->enqueue([owner] {});
  owner.reset();
  stream.reset();
  gate->complete();
  released->synchronize(kWait);
}

TEST_CASE("each thread has its own current stream, the default stream unless guarded") {
  HostBackend backend;
  CHECK(&current_stream(backend) == &backend.default_stream());
  CHECK(&current_stream() == &host_backend().default_stream());
  auto s1 = backend.create_stream();
  auto s2 = backend.create_stream();
  {
    StreamGuard g1(*s1);
    CHECK(&current_stream(backend) == s1.get());
    CHECK(&current_stream() == &host_backend().default_stream());  // another backend
    {
      StreamGuard g2(*s2);
      CHECK(&current_stream(backend) == s2.get());
    }
    CHECK(&current_stream(backend) == s1.get());
    Stream* on_other_thread = nullptr;
    std::thread([&] { on_other_thread = &current_stream(backend); }).join();
    CHECK(on_other_thread == &backend.default_stream());
  }
  CHECK(&current_stream(backend) == &backend.default_stream());
}

TEST_CASE("graph capture: a side stream waits on the current stream and is current inside") {
  HostBackend backend;
  auto before = backend.create_stream();
  StreamGuard guard(*before);
  auto gate = Event::user();
  int value = 0;
  int seen = -1;
  before->wait(*gate);
  before->enqueue([&] { value = 7; });
  {
    GraphCapture capture(backend);
    CHECK(&capture.stream() != before.get());
    CHECK(&current_stream(backend) == &capture.stream());
    capture.stream().enqueue([&] { seen = value; });
    CHECK_FALSE(capture.stream().query());  // waits on the work enqueued before the capture
    gate->complete();
    capture.stream().synchronize(kWait);
    CHECK(seen == 7);
  }
  CHECK(&current_stream(backend) == before.get());
}

TEST_CASE("graph capture: TP and PP captures share one stream") {
  HostBackend backend;
  {
    GraphCapture tp(backend);
    {
      GraphCapture pp(tp.shared_stream());
      CHECK(&pp.stream() == &tp.stream());
      CHECK(&current_stream(backend) == &tp.stream());
      CHECK(tp.stream().query());  // entering on the current stream does not wait on itself
    }
    CHECK(&current_stream(backend) == &tp.stream());
  }
  CHECK(&current_stream(backend) == &backend.default_stream());

  {
    GraphCapture on_host;
    CHECK(&current_stream() == &on_host.stream());
    CHECK(&on_host.stream().backend() == &host_backend());
  }
  CHECK(&current_stream() == &host_backend().default_stream());
  CHECK(code_of([] { GraphCapture capture(std::shared_ptr<Stream>{}); }) == Errc::invalid_argument);
}

TEST_CASE("host copies: whole tensors and byte ranges, with dst carrying the copy's event") {
  HostBackend backend;
  auto& stream = backend.default_stream();
  Tensor a = make_floats(backend, {1, 2, 3, 4});
  CHECK(std::memcmp(a.data(), std::vector<float>{1, 2, 3, 4}.data(), 16) == 0);  // host-readable

  Tensor b = backend.allocate(Shape{4}, DType::f32);
  auto done = backend.copy(a, b, stream);
  CHECK(b.ready_event() == done);
  CHECK(floats(backend, b) == std::vector<float>{1, 2, 3, 4});

  float two[2] = {0, 0};
  backend.copy_to_host(a, 2 * sizeof(float), two, sizeof two, stream)->synchronize(kWait);
  CHECK(two[0] == 3);
  CHECK(two[1] == 4);

  const float nine = 9;
  backend.copy_from_host(&nine, sizeof nine, b, 0, stream);
  backend.copy(a, 0, b, 3 * sizeof(float), sizeof(float), stream);
  CHECK(floats(backend, b) == std::vector<float>{9, 2, 3, 1});

  Tensor empty = backend.allocate(Shape{0}, DType::f32);
  backend.copy_to_host(empty, nullptr, stream)->synchronize(kWait);
}

TEST_CASE("copies check their arguments") {
  HostBackend backend;
  testing::OpaqueBackend opaque;
  auto& stream = backend.default_stream();
  Tensor a = backend.allocate(Shape{4}, DType::f32);
  Tensor c = backend.allocate(Shape{2, 2}, DType::f32);
  Tensor on_opaque = opaque.allocate(Shape{4}, DType::f32);
  float host[8];
  CHECK(code_of([&] { backend.copy_to_host(a, 8, host, 16, stream); }) == Errc::invalid_argument);
  CHECK(code_of([&] { backend.copy_to_host(a, host, opaque.default_stream()); }) ==
        Errc::invalid_argument);
  CHECK(code_of([&] { backend.copy_to_host(on_opaque, host, stream); }) == Errc::invalid_argument);
  CHECK(code_of([&] { backend.copy_to_host(a, nullptr, stream); }) == Errc::invalid_argument);
  CHECK(code_of([&] { backend.copy(a, c, stream); }) == Errc::invalid_argument);
  CHECK(code_of([&] { backend.copy_to_host(Tensor{}, host, stream); }) == Errc::invalid_argument);
  CHECK(code_of([&] { backend.copy(a, 0, c, 0, 32, stream); }) == Errc::invalid_argument);
}

TEST_CASE("a copy waits on the event of the work that produced its source") {
  HostBackend backend;
  auto producer = backend.create_stream();
  auto transport = backend.create_stream();
  auto gate = Event::user();
  Tensor t = backend.allocate(Shape{3}, DType::f32);
  producer->wait(*gate);
  producer->enqueue([t] {
    float* p = t.data_as<float>();
    p[0] = 1;
    p[1] = 2;
    p[2] = 3;
  });
  t.set_ready_event(producer->record());

  float out[3] = {0, 0, 0};
  auto copied = backend.copy_to_host(t, out, *transport);  // returns before the bytes exist
  CHECK_FALSE(copied->query());
  gate->complete();
  copied->synchronize(kWait);
  CHECK(out[0] == 1);
  CHECK(out[1] == 2);
  CHECK(out[2] == 3);
}

TEST_CASE("opaque device: reading its memory directly gives wrong bytes, its copies the right ones") {
  testing::OpaqueBackend opaque;
  auto stream = opaque.create_stream();
  const std::vector<float> values{1.5f, -2, 3, 4.25f};
  Tensor t = opaque.allocate(Shape{4}, DType::f32);
  CHECK(t.device() == Device{DeviceType::xpu, 0});

  auto gate = Event::user();  // the values land only after the copy call returned
  stream->wait(*gate);
  opaque.copy_from_host(values.data(), t, *stream);
  gate->complete();

  std::vector<float> out(4);
  opaque.copy_to_host(t, out.data(), *stream)->synchronize(kWait);
  CHECK(out == values);
  CHECK(std::memcmp(t.data(), values.data(), 16) != 0);
  CHECK(static_cast<const unsigned char*>(t.data())[0] == testing::OpaqueBackend::kDecoy);

  std::memset(t.data(), 0, 16);  // writing directly does not reach the device's bytes either
  CHECK(floats(opaque, t) == values);

  Tensor u = opaque.allocate(Shape{4}, DType::f32);
  opaque.copy(t, u, *stream);
  opaque.copy(t, 0, u, 2 * sizeof(float), 2 * sizeof(float), *stream);
  float pair[2];
  opaque.copy_to_host(u, sizeof(float), pair, sizeof pair, *stream)->synchronize(kWait);
  CHECK(pair[0] == -2);
  CHECK(pair[1] == 1.5f);
}

}  // TEST_SUITE("stream")
