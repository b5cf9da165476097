// Device tensors the way an engine handles them — made and moved on a stream, behind events,
// never by synchronizing the device — for the GPU tests and rankmesh-gpu-ranks (no doctest here).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "rankmesh/cuda_backend.hpp"
#include "rankmesh/runtime.hpp"
#include "test_kernels.hpp"

namespace rankmesh::test {

// Throws from a rank's thread (collected by run_ranks) when `condition` fails.
inline void expect(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error(what);
}

// A device tensor of `shape` whose element i is start + i (f32), written by a kernel launched
// straight onto `stream`'s CUDA stream after a spin of `spin_ms`, as an engine's kernels are; its
// ready event is the kernel's. As with any engine kernel, the caller keeps the tensor (or hands
// it to rankmesh) until that event completes: the allocator reuses a dropped block at once.
inline Tensor device_iota(CudaBackend& cuda, Stream& stream, Shape shape, float start, int spin_ms = 0) {
  Tensor t = cuda.allocate(shape, DType::f32);
  if (t.numel() > 0) {
    launch_iota_f32(t.data(), static_cast<std::size_t>(t.numel()), start, spin_ms,
                    CudaBackend::native_stream(stream));
  }
  t.set_ready_event(stream.record());
  return t;
}

// A device copy of host tensor `host`, uploaded on `stream`. The host bytes stay alive until the
// copy has run: its completion callback holds them.
inline Tensor to_device(CudaBackend& cuda, Stream& stream, const Tensor& host) {
  Tensor t = cuda.allocate(host.shape(), host.dtype());
  if (host.nbytes() > 0) {
    auto done = cuda.copy_from_host(host.data(), t, stream);
    done->on_complete([host] {});
  }
  return t;
}

// The bytes of device tensor `t` on the host: copied on `stream` after t's ready event, waited
// for with a timeout. Checks first that `t` is on the device, with a ready event.
inline Tensor to_host(CudaBackend& cuda, Stream& stream, const Tensor& t, const std::string& what) {
  expect(t.defined(), what + ": no tensor");
  expect(t.device() == cuda.device(), what + ": on " + to_string(t.device()) + ", not on " +
                                          to_string(cuda.device()));
  expect(t.ready_event() != nullptr || t.numel() == 0, what + ": no ready event");
  Tensor host = Tensor::empty(t.shape(), t.dtype());
  if (t.nbytes() > 0) cuda.copy_to_host(t, host.data(), stream)->synchronize(default_timeout());
  return host;
}

// Rank r's f32 input of `shape` on the host: element i is r * 1000 + i.
inline Tensor host_input(int rank, Shape shape) {
  Tensor t = Tensor::empty(shape, DType::f32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = static_cast<float>(rank * 1000 + i);
  return t;
}

inline std::vector<float> floats(const Tensor& t) {
  expect(t.dtype() == DType::f32, "floats: a tensor of " + std::string(to_string(t.dtype())));
  return std::vector<float>(t.data_as<float>(), t.data_as<float>() + t.numel());
}

inline std::vector<float> iota_from(float start, std::int64_t count) {
  std::vector<float> v(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) v[static_cast<std::size_t>(i)] = start + static_cast<float>(i);
  return v;
}

}  // namespace rankmesh::test
