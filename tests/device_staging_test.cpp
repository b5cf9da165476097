// Device tensors over every transport and through the collectives: where the channel carries
// host memory only (shm, tcp) and where collectives compute on the host, a device tensor's bytes
// are staged through host memory and come back on the device. The opaque test device stands in
// for a GPU: code that read its memory directly instead of through its copies would see decoys.
#include <doctest/doctest.h>

#include <vector>

#include "opaque_backend.hpp"
#include "rankmesh/device_backend.hpp"
#include "device_tensors.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

TEST_CASE_TEMPLATE("a dict mixing host and device tensors arrives with each key on its device", Over,
                   RANKMESH_EVERY_TRANSPORT) {
  testing::OpaqueBackend device;
  std::vector<float> on_device_values = ramp(300, 1.0f);
  TensorDict received, handed;
  auto errors = run_world(
      [&](ParallelState& s) {
        if (s.rank() == 0) {
          Tensor host = Tensor::empty({4}, DType::f32);
          for (int i = 0; i < 4; ++i) host.data_as<float>()[i] = 0.5f * static_cast<float>(i);
          TensorDict dict{{"hidden", device_tensor(device, on_device_values, Shape{3, 100})},
                          {"positions", host},
                          {"nothing", device.allocate(Shape{0, 8}, DType::f32)},
                          {"step", Value(std::int64_t{7})}};
          // Twice: the second goes through the pair's cached schema.
          s.world().send_tensor_dict(dict, 1);
          s.world().send_tensor_dict(dict, 1);
          // Without an empty device tensor: in one process the dict itself changes hands.
          dict.erase("nothing");
          s.world().send_tensor_dict(dict, 1);
        } else {
          (void)s.world().recv_tensor_dict(0);
          received = s.world().recv_tensor_dict(0);
          handed = s.world().recv_tensor_dict(0);
        }
      },
      with_device<Over>(2, device));
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  const Tensor& hidden = received.at("hidden").as<Tensor>();
  CHECK(hidden.shape() == Shape{3, 100});
  CHECK(read_back(device, hidden) == on_device_values);
  const Tensor& positions = received.at("positions").as<Tensor>();
  CHECK(positions.device() == Device{});
  CHECK(positions.data_as<float>()[3] == 1.5f);
  const Tensor& nothing = received.at("nothing").as<Tensor>();
  CHECK(nothing.device() == device.device());
  CHECK(nothing.shape() == Shape{0, 8});
  CHECK(received.at("step").as<std::int64_t>() == 7);
  const Tensor& handed_hidden = handed.at("hidden").as<Tensor>();
  CHECK(handed_hidden.device() == device.device());
  CHECK(read_back(device, handed_hidden) == on_device_values);
  CHECK(handed.at("positions").as<Tensor>().data_as<float>()[3] == 1.5f);
  CHECK_FALSE(handed.contains("nothing"));
}

TEST_CASE_TEMPLATE("a staged device tensor lands in the receiver's device buffer", Over,
                   RANKMESH_EVERY_TRANSPORT) {
  testing::OpaqueBackend device;
  std::vector<float> values = ramp(64, -3.0f);
  Tensor buffer = device.allocate(Shape{64}, DType::f32);
  auto errors = run_world(
      [&](ParallelState& s) {
        if (s.rank() == 0) {
          s.world().send_tensor_dict(TensorDict{{"x", device_tensor(device, values, Shape{64})}}, 1);
        } else {
          TensorDict got = s.world().recv_tensor_dict(0, nullptr, {}, RecvInto{{"x", buffer}});
          CHECK(got.at("x").as<Tensor>().shares_storage_with(buffer));
        }
      },
      with_device<Over>(2, device));
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK(read_back(device, buffer) == values);
}

TEST_CASE_TEMPLATE("collectives on device tensors give device results equal to the host's", Over,
                   RANKMESH_EVERY_TRANSPORT) {
  testing::OpaqueBackend device;
  constexpr int kWorld = 2;
  std::vector<std::vector<float>> sums(kWorld), gathered(kWorld), broadcasted(kWorld),
      dict_values(kWorld), at_root(kWorld);
  auto errors = run_world(
      [&](ParallelState& s) {
        const int r = s.rank();
        GroupCoordinator& world = s.world();
        Tensor mine = device_tensor(device, ramp(6, 10.0f * static_cast<float>(r)), Shape{2, 3});
        sums[r] = read_back(device, world.all_reduce(mine));
        gathered[r] = read_back(device, world.all_gather(mine, 0));
        Tensor root_data = device_tensor(device, ramp(6, 100.0f + static_cast<float>(r)), Shape{2, 3});
        world.broadcast(root_data, 1);
        broadcasted[r] = read_back(device, root_data);
        Tensor g = world.gather(mine, 0, 0);
        if (r == 0) at_root[r] = read_back(device, g);
        TensorDict dict{{"w", device_tensor(device, ramp(5, 1.0f), Shape{5})}};
        TensorDict got = world.broadcast_tensor_dict(r == 0 ? dict : TensorDict{}, 0);
        dict_values[r] = read_back(device, got.at("w").as<Tensor>());
      },
      with_device<Over>(kWorld, device));
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  const std::vector<float> sum = {10, 12, 14, 16, 18, 20};  // ramp(6,0) + ramp(6,10)
  std::vector<float> both = ramp(6, 0.0f);
  for (float v : ramp(6, 10.0f)) both.push_back(v);
  for (int r = 0; r < kWorld; ++r) {
    CAPTURE(r);
    CHECK(sums[r] == sum);
    CHECK(gathered[r] == both);
    CHECK(broadcasted[r] == ramp(6, 101.0f));
    CHECK(dict_values[r] == ramp(5, 1.0f));
  }
  CHECK(at_root[0] == both);
}
