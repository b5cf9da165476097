// Same-node device payloads (device_ipc.hpp) with RANKMESH_CUDA_IPC=1: a device tensor to
// another rank of this node travels as exported device memory, not staged bytes. The opaque
// test device shares memory between the embedded ranks of this process as CUDA IPC does between
// processes, so the protocol runs here over the transports that carry host memory only.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "opaque_backend.hpp"
#include "rankmesh/device_backend.hpp"
#include "device_tensors.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace {


// RANKMESH_CUDA_IPC=1 for the ranks made while it lives.
struct DeviceIpcOn {
  DeviceIpcOn() { ::setenv("RANKMESH_CUDA_IPC", "1", 1); }
  ~DeviceIpcOn() { ::unsetenv("RANKMESH_CUDA_IPC"); }
};


// Polls `done` for up to kDeviceWait; no timing is asserted, only that it happens at all.
template <class Done>
bool eventually(Done&& done) {
  const auto until = std::chrono::steady_clock::now() + kDeviceWait;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace

#define RANKMESH_SAME_NODE_TRANSPORTS rankmesh::test::OverShm, rankmesh::test::OverTcp

TEST_CASE_TEMPLATE("device tensors travel as exported memory, held until the receiver's copy ran",
                   Over, RANKMESH_SAME_NODE_TRANSPORTS) {
  DeviceIpcOn on;
  testing::OpaqueBackend device;
  REQUIRE(testing::OpaqueBackend::exports_held() == 0);
  const std::vector<float> values = ramp(3000, 1.0f);
  std::atomic<bool> sent{false};
  std::size_t held_after_send = 0;
  std::size_t held_before_copy = 0;
  std::size_t held_after_copy = 0;
  TensorDict received;
  auto errors = run_world(
      [&](ParallelState& s) {
        if (s.rank() == 0) {
          Tensor mine = device_tensor(device, values, Shape{30, 100});
          Tensor host = Tensor::empty({4}, DType::f32);
          for (int i = 0; i < 4; ++i) host.data_as<float>()[i] = 0.25f * static_cast<float>(i);
          const TensorDict dict{{"hidden", mine}, {"positions", host}};  // not donated
          s.world().send_tensor_dict(dict, 1);
          // The export is the sender's own copy: the caller may overwrite its tensor at once.
          std::vector<float> zeros(values.size(), 0.0f);
          device.copy_from_host(zeros.data(), mine, current_stream(device))->synchronize(kDeviceWait);
          held_after_send = testing::OpaqueBackend::exports_held();
          sent = true;
        } else {
          REQUIRE(eventually([&] { return sent.load(); }));
          // Hold the receiver's stream back: its copy out of the export cannot run yet.
          auto gate = Event::user();
          current_stream(device).wait(*gate);
          received = s.world().recv_tensor_dict(0);
          held_before_copy = testing::OpaqueBackend::exports_held();
          gate->complete();
          (void)read_back(device, received.at("hidden").as<Tensor>());
          held_after_copy = testing::OpaqueBackend::exports_held();
        }
      },
      with_device<Over>(2, device));
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK(held_after_send == 1);
  CHECK(held_before_copy == 1);
  CHECK(held_after_copy == 0);
  const Tensor& hidden = received.at("hidden").as<Tensor>();
  CHECK(hidden.shape() == Shape{30, 100});
  CHECK(read_back(device, hidden) == values);
  const Tensor& positions = received.at("positions").as<Tensor>();
  CHECK(positions.device() == Device{});
  CHECK(positions.data_as<float>()[3] == 0.75f);
}

TEST_CASE_TEMPLATE("exported device tensors: cached schemas, buffers to land in, broadcast, donated", Over,
                   RANKMESH_SAME_NODE_TRANSPORTS) {
  DeviceIpcOn on;
  testing::OpaqueBackend device;
  const std::vector<float> a = ramp(500, 3.0f);
  const std::vector<float> b = ramp(64, -7.0f);
  std::vector<std::vector<float>> got(3);
  std::vector<std::vector<float>> landed(3);
  std::vector<std::vector<float>> broadcast(3);
  std::vector<float> donated;
  auto errors = run_world(
      [&](ParallelState& s) {
        const auto r = static_cast<std::size_t>(s.rank());
        if (s.rank() == 0) {
          TensorDict dict{{"a", device_tensor(device, a, Shape{5, 100})},
                          {"b", device_tensor(device, b, Shape{64})}};
          for (int dst : {1, 2}) {
            // Twice: the second goes through the pair's cached schema.
            s.world().send_tensor_dict(dict, dst);
            s.world().send_tensor_dict(dict, dst);
          }
          (void)s.world().broadcast_tensor_dict(dict, 0);
          // Donated: exported as it is, without a copy of the sender's.
          s.world().send_tensor_dict(TensorDict{{"a", device_tensor(device, a, Shape{5, 100})}}, 1);
        } else {
          got[r] = read_back(device, s.world().recv_tensor_dict(0).at("a").as<Tensor>());
          Tensor into = device.allocate(Shape{64}, DType::f32);
          (void)s.world().recv_tensor_dict(0, nullptr, {}, {{"b", into}});
          landed[r] = read_back(device, into);
          broadcast[r] =
              read_back(device, s.world().broadcast_tensor_dict({}, 0).at("b").as<Tensor>());
          if (s.rank() == 1)
            donated = read_back(device, s.world().recv_tensor_dict(0).at("a").as<Tensor>());
        }
      },
      with_device<Over>(3, device));
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (std::size_t r = 1; r < 3; ++r) {
    CHECK(got[r] == a);
    CHECK(landed[r] == b);
    CHECK(broadcast[r] == b);
  }
  CHECK(donated == a);
  CHECK(eventually([] { return testing::OpaqueBackend::exports_held() == 0; }));
}

TEST_CASE("an export the receiver never takes is dropped after the timeout, and a late import fails") {
  DeviceIpcOn on;
  testing::OpaqueBackend device;
  RuntimeOptions options = with_device<OverShm>(2, device);
  options.timeout = std::chrono::milliseconds(300);
  std::atomic<bool> dropped{false};
  std::string late;
  auto errors = run_world(
      [&](ParallelState& s) {
        if (s.rank() == 0) {
          s.world().send_tensor_dict({{"x", device_tensor(device, ramp(100, 0.0f), Shape{100})}}, 1);
          // Nobody copies it: the hold ends with the group's timeout, not never.
          dropped = eventually([] { return testing::OpaqueBackend::exports_held() == 0; });
        } else {
          REQUIRE(eventually([&] { return dropped.load(); }));
          try {
            (void)s.world().recv_tensor_dict(0);
          } catch (const Error& e) {
            late = e.what();
          }
        }
      },
      options);
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK(dropped);
  // The receiver learns the export is gone; it never reads memory its exporter gave up.
  CHECK(late.find("is gone") != std::string::npos);
}

TEST_CASE("a device that cannot share its memory is staged, and the log says so once") {
  DeviceIpcOn on;
  testing::OpaqueBackend device(Device{DeviceType::xpu, 0}, /*shares=*/false);
  const std::vector<float> values = ramp(200, 5.0f);
  std::vector<std::vector<float>> got;
  std::mutex lines_mutex;
  std::vector<std::string> lines;
  RuntimeOptions options = with_device<OverShm>(2, device);
  options.log = [&](const std::string& line) {
    std::lock_guard lock(lines_mutex);
    lines.push_back(line);
  };
  auto errors = run_world(
      [&](ParallelState& s) {
        if (s.rank() == 0) {
          const TensorDict dict{{"x", device_tensor(device, values, Shape{200})}};
          s.world().send_tensor_dict(dict, 1);
          s.world().send_tensor_dict(dict, 1);
        } else {
          for (int i = 0; i < 2; ++i)
            got.push_back(read_back(device, s.world().recv_tensor_dict(0).at("x").as<Tensor>()));
        }
      },
      options);
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  REQUIRE(got.size() == 2);
  CHECK(got[0] == values);
  CHECK(got[1] == values);
  CHECK(testing::OpaqueBackend::exports_held() == 0);
  std::size_t said = 0;
  for (const std::string& line : lines)
    if (line.find("are staged through host memory") != std::string::npos) ++said;
  // Once per process, whatever the number of tensors (no other case here falls back).
  CHECK(said == 1);
}
