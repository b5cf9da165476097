// Kernels of the GPU tests (test_kernels.hpp): a slow producer and fills.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "test_kernels.hpp"

namespace rankmesh::test {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;

// Busy-waits `cycles` SM clock cycles. clock64 counts per SM, which is all one thread needs.
__device__ void spin(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

__global__ void slow_fill_u32(std::uint32_t* dst, std::size_t count, std::uint32_t value, long long cycles) {
  if (cycles > 0) spin(cycles);
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    dst[i] = value;
}

__global__ void iota_f32(float* dst, std::size_t count, float start, long long cycles) {
  if (cycles > 0) spin(cycles);
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    dst[i] = start + static_cast<float>(i);
}

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// Clock cycles in `ms` milliseconds on the current device. The peak clock rate: a slower actual
// clock only makes the spin longer, which the tests never mind.
long long cycles_for(int ms) {
  if (ms <= 0) return 0;
  int device = 0;
  int khz = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device), "cudaDeviceGetAttribute(clock rate)");
  return static_cast<long long>(khz) * ms;
}

int blocks_for(std::size_t count) {
  const std::size_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

}  // namespace

void launch_slow_fill_u32(void* dst, std::size_t count, std::uint32_t value, int spin_ms, void* stream) {
  slow_fill_u32<<<blocks_for(count), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<std::uint32_t*>(dst), count, value, cycles_for(spin_ms));
  check(cudaGetLastError(), "slow_fill_u32 launch");
}

void launch_iota_f32(void* dst, std::size_t count, float start, int spin_ms, void* stream) {
  iota_f32<<<blocks_for(count), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<float*>(dst), count, start, cycles_for(spin_ms));
  check(cudaGetLastError(), "iota_f32 launch");
}

void* device_malloc(std::size_t bytes) {
  void* ptr = nullptr;
  return cudaMalloc(&ptr, bytes) == cudaSuccess ? ptr : nullptr;
}

bool device_free(void* ptr) noexcept { return cudaFree(ptr) == cudaSuccess; }

}  // namespace rankmesh::test
