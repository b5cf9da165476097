#include "kernels.hpp"

#include <string>

#include "rankmesh/error.hpp"

namespace pipeline::kernels {
namespace {

// 16 x 16 output tiles; each block walks k in 16-wide slabs held in shared memory, so each
// element of a and b is read from global memory once per tile instead of once per product.
constexpr int kTile = 16;
constexpr int kThreads = 256;  // element-wise kernels: threads per block

__global__ void matmul_kernel(const float* a, const float* b, float* out, int n, int k, int p) {
  __shared__ float a_tile[kTile][kTile];
  __shared__ float b_tile[kTile][kTile];
  const int row = blockIdx.y * kTile + threadIdx.y;
  const int col = blockIdx.x * kTile + threadIdx.x;
  float sum = 0.0f;
  for (int k0 = 0; k0 < k; k0 += kTile) {
    const int a_col = k0 + threadIdx.x, b_row = k0 + threadIdx.y;
    a_tile[threadIdx.y][threadIdx.x] =
        row < n && a_col < k ? a[static_cast<long long>(row) * k + a_col] : 0.0f;
    b_tile[threadIdx.y][threadIdx.x] =
        b_row < k && col < p ? b[static_cast<long long>(b_row) * p + col] : 0.0f;
    __syncthreads();
    for (int j = 0; j < kTile; ++j) sum += a_tile[threadIdx.y][j] * b_tile[j][threadIdx.x];
    __syncthreads();
  }
  if (row < n && col < p) out[static_cast<long long>(row) * p + col] = sum;
}

__global__ void add_kernel(const float* a, const float* b, float* out, long long count) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void activate_kernel(float* x, long long count) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    x[i] = tanhf(x[i]);
}

__global__ void zero_kernel(float* x, long long count) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    x[i] = 0.0f;
}

cudaStream_t native(void* stream) { return static_cast<cudaStream_t>(stream); }

// Enough blocks to cover `count` once, capped: the kernels stride over the rest.
unsigned blocks_for(std::int64_t count) {
  const std::int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks > 65535 ? 65535 : blocks);
}

// A launch fails at once (bad configuration, no device, a fault of earlier work): report it
// here, where the kernel is known, rather than as a puzzling failure of a later copy.
void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    throw rankmesh::Error(rankmesh::Errc::device, std::string("rankmesh-pipeline: launching ") +
                                                       kernel + " failed: " +
                                                       cudaGetErrorString(status));
}

}  // namespace

void matmul(const float* a, const float* b, float* out, int n, int k, int p, void* stream) {
  const dim3 threads(kTile, kTile);
  const dim3 blocks((p + kTile - 1) / kTile, (n + kTile - 1) / kTile);
  matmul_kernel<<<blocks, threads, 0, native(stream)>>>(a, b, out, n, k, p);
  check_launch("matmul");
}

void add(const float* a, const float* b, float* out, std::int64_t count, void* stream) {
  add_kernel<<<blocks_for(count), kThreads, 0, native(stream)>>>(a, b, out, count);
  check_launch("add");
}

void activate(float* x, std::int64_t count, void* stream) {
  activate_kernel<<<blocks_for(count), kThreads, 0, native(stream)>>>(x, count);
  check_launch("activate (tanh)");
}

void zero(float* x, std::int64_t count, void* stream) {
  zero_kernel<<<blocks_for(count), kThreads, 0, native(stream)>>>(x, count);
  check_launch("zero");
}

void wait(void* stream, void* cuda_event) {
  const cudaError_t status =
      cudaStreamWaitEvent(native(stream), static_cast<cudaEvent_t>(cuda_event), 0);
  if (status != cudaSuccess)
    throw rankmesh::Error(rankmesh::Errc::device,
                          std::string("rankmesh-pipeline: cudaStreamWaitEvent failed: ") +
                              cudaGetErrorString(status));
}

}  // namespace pipeline::kernels
