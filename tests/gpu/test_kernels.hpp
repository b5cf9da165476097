// The CUDA work the GPU tests issue themselves, behind plain C++ declarations (no CUDA types), so
// that the tests compile as ordinary C++ against rankmesh/cuda_backend.hpp. `stream` is a
// cudaStream_t as CudaBackend::native_stream gives it. Launch failures throw std::runtime_error.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rankmesh::test {

// Every thread first spins `spin_ms` milliseconds (clock64 against the device's clock rate),
// then writes `value` into its part of dst[0, count): a producer still running while the host
// and other streams go on, so that a copy issued too early reads the old bytes.
void launch_slow_fill_u32(void* dst, std::size_t count, std::uint32_t value, int spin_ms, void* stream);

// dst[i] = start + i for i in [0, count), as f32, after spinning `spin_ms` milliseconds (0: none).
void launch_iota_f32(void* dst, std::size_t count, float start, int spin_ms, void* stream);

// Plain cudaMalloc/cudaFree for the tests' own CudaMemoryHooks: null when cudaMalloc fails,
// false when cudaFree does (a hook runs in a tensor's deleter, where nothing may throw).
void* device_malloc(std::size_t bytes);
bool device_free(void* ptr) noexcept;

}  // namespace rankmesh::test
