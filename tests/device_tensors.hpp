// Device tensors for tests of device payloads (any DeviceBackend, the opaque test device above
// all): made from and read back to host values through the device's own copies.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <numeric>
#include <vector>

#include "rankmesh/device_backend.hpp"
#include "world.hpp"

namespace rankmesh::test {

inline constexpr auto kDeviceWait = std::chrono::seconds(10);

inline Tensor device_tensor(DeviceBackend& device, const std::vector<float>& values, Shape shape) {
  Tensor t = device.allocate(shape, DType::f32);
  device.copy_from_host(values.data(), t, current_stream(device))->synchronize(kDeviceWait);
  return t;
}

inline std::vector<float> read_back(DeviceBackend& device, const Tensor& t) {
  REQUIRE(t.defined());
  REQUIRE(t.device() == device.device());
  std::vector<float> values(static_cast<std::size_t>(t.numel()));
  device.copy_to_host(t, values.data(), current_stream(device))->synchronize(kDeviceWait);
  return values;
}

inline std::vector<float> ramp(int n, float start) {
  std::vector<float> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

// An embedded world over `Over` whose ranks know `device`.
template <class Over>
RuntimeOptions with_device(int world, DeviceBackend& device) {
  RuntimeOptions options = options_for<Over>(world);
  options.backends = {&device};
  return options;
}

}  // namespace rankmesh::test
