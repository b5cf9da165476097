// Payloads follow their ready events: send never waits for the producing work, the receiver
// still sees finished values, and device memory is touched only through the device's copies.
#include <doctest/doctest.h>

#include <atomic>

#include "opaque_backend.hpp"
#include "rankmesh/device_backend.hpp"
#include "rankmesh/event.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace {

// A tensor whose values are written by work on `producer` that waits for `gate`.
Tensor produced_behind(const std::shared_ptr<Event>& gate, Stream& producer, float value) {
  Tensor t = Tensor::empty({64}, DType::f32);
  producer.wait(*gate);
  producer.enqueue([t, value] {
    for (std::int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = value;
  });
  t.set_ready_event(producer.record());
  return t;
}

bool all_equal(const Tensor& t, float value) {
  for (std::int64_t i = 0; i < t.numel(); ++i)
    if (t.data_as<float>()[i] != value) return false;
  return true;
}

}  // namespace

TEST_CASE("send returns before the producing work runs, the receiver sees the finished values") {
  for (bool donate : {false, true}) {
    CAPTURE(donate);
    auto gate = Event::user();
    auto producer = make_host_stream(host_backend());
    std::atomic<bool> sent{false};
    bool ran_before_send_returned = true;
    Tensor received;
    auto errors = run_world(2, [&](ParallelState& s) {
      if (s.rank() == 0) {
        Tensor t = produced_behind(gate, *producer, 42.0f);
        if (donate) {
          s.world().send_tensor_dict(TensorDict{{"x", std::move(t)}}, 1);
        } else {
          TensorDict dict{{"x", t}};
          s.world().send_tensor_dict(dict, 1);
        }
        ran_before_send_returned = producer->query();
        sent = true;
        gate->complete();  // only now may the producing work run
      } else {
        received = s.world().recv_tensor_dict(0).at("x").as<Tensor>();
      }
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    CHECK(sent.load());
    CHECK_FALSE(ran_before_send_returned);
    CHECK(all_equal(received, 42.0f));
  }
}

TEST_CASE("a device whose memory the host cannot read travels through its own copy operations") {
  testing::OpaqueBackend device;
  RuntimeOptions options = options_for(2);
  options.backends = {&device};
  std::vector<float> values(16);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 1.5f;
  Tensor received;
  auto errors = run_world([&](ParallelState& s) {
    if (s.rank() == 0) {
      Tensor t = device.allocate({16}, DType::f32);
      device.copy_from_host(values.data(), t, device.default_stream());
      TensorDict dict{{"x", t}};
      s.world().send_tensor_dict(dict, 1);  // not donated: copied by the device
    } else {
      received = s.world().recv_tensor_dict(0).at("x").as<Tensor>();
    }
  }, options);
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  REQUIRE(received.device() == device.device());
  std::vector<float> back(16);
  device.copy_to_host(received, back.data(), device.default_stream())->synchronize(default_timeout());
  CHECK(back == values);
  CHECK(static_cast<unsigned char*>(received.data())[0] == testing::OpaqueBackend::kDecoy);
}

TEST_CASE("graph_capture: TP and PP share one side stream that waits on the current stream") {
  auto errors = run_world(4, [](ParallelState& s) {
    s.initialize_model_parallel(2, 2);
    Stream& before = current_stream();
    auto gate = Event::user();
    before.wait(*gate);  // work on the current stream is held back
    {
      ParallelGraphCapture capture(s);
      if (&current_stream() != &capture.stream()) throw std::runtime_error("capture not current");
      if (&capture.stream() == &before) throw std::runtime_error("no side stream");
      auto marker = capture.stream().record();
      if (marker->query()) throw std::runtime_error("side stream did not wait on the current one");
      gate->complete();
      marker->synchronize(default_timeout());
      GraphCapture single = s.tp().graph_capture();
      if (&current_stream() != &single.stream()) throw std::runtime_error("group capture");
    }
    if (&current_stream() != &before) throw std::runtime_error("current stream not restored");
  });
  CHECK_MESSAGE(all_ok(errors), joined(errors));
}
