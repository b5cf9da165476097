// A tensor dict mixing host and CUDA tensors and plain values, sent and received (copied and
// donated, over inproc and shm): each tensor lands on the device it left from, with its bytes.
#include <doctest/doctest.h>

#include <cstdint>
#include <utility>

#include "gpu_support.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace {

TensorDict mixed(CudaBackend& cuda, Stream& stream) {
  Tensor positions = Tensor::empty({3}, DType::i64);
  for (int i = 0; i < 3; ++i) positions.data_as<std::int64_t>()[i] = 40 + i;
  TensorDict nested{{"kv_device", device_iota(cuda, stream, {2, 2}, -8.0f, 20)},
                    {"mask_host", host_input(3, {2})}};
  return TensorDict{{"hidden_device", device_iota(cuda, stream, {4, 4}, 100.0f, 50)},
                    {"positions_host", positions},
                    {"step", 7},
                    {"name", "decode"},
                    {"scale", 0.25},
                    {"nested", nested}};
}

}  // namespace

TEST_CASE_TEMPLATE("a dict of host and CUDA tensors and scalars: each key lands on its device with its bytes", Over,
                   OverInproc, OverShm) {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  CudaBackend cuda;
  for (bool donate : {false, true}) {
    CAPTURE(donate);
    RuntimeOptions options = options_for<Over>(2);
    options.backends = {&cuda};
    TensorDict received;
    Tensor hidden, kv;
    auto errors = run_world([&](ParallelState& s) {
      auto own = cuda.create_stream();
      StreamGuard guard(*own);
      if (s.rank() == 0) {
        TensorDict dict = mixed(cuda, *own);
        if (donate) {
          s.world().send_tensor_dict(std::move(dict), 1);
        } else {
          s.world().send_tensor_dict(dict, 1);
        }
      } else {
        received = s.world().recv_tensor_dict(0);
        hidden = to_host(cuda, *own, received.at("hidden_device").as<Tensor>(), "hidden_device");
        kv = to_host(cuda, *own, received.at("nested").as<TensorDict>().at("kv_device").as<Tensor>(), "kv_device");
      }
    }, options);
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    const Device host{DeviceType::cpu, 0};
    CHECK(received.at("hidden_device").as<Tensor>().device() == cuda.device());
    CHECK(hidden.shape() == Shape{4, 4});
    CHECK(floats(hidden) == iota_from(100.0f, 16));
    const Tensor& positions = received.at("positions_host").as<Tensor>();
    CHECK(positions.device() == host);
    REQUIRE(positions.dtype() == DType::i64);
    for (int i = 0; i < 3; ++i) CHECK(positions.data_as<std::int64_t>()[i] == 40 + i);
    CHECK(received.at("step") == Value(7));
    CHECK(received.at("name") == Value("decode"));
    CHECK(received.at("scale") == Value(0.25));
    const TensorDict& nested = received.at("nested").as<TensorDict>();
    CHECK(nested.at("kv_device").as<Tensor>().device() == cuda.device());
    CHECK(floats(kv) == iota_from(-8.0f, 4));
    CHECK(nested.at("mask_host").as<Tensor>().device() == host);
    CHECK(floats(nested.at("mask_host").as<Tensor>()) == iota_from(3000.0f, 2));
  }
}
