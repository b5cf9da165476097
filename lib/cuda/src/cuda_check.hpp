// CUDA runtime results as rankmesh errors.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

namespace rankmesh::cuda {

// Throws Error(device) "<what> on cuda:<device>: <CUDA's name and text>" unless `result` is
// cudaSuccess. Out of memory stays Errc::device too: the caller may retry after freeing its cache.
void check(cudaError_t result, const char* what, int device);
// The text of a CUDA error: "cudaErrorInvalidValue (invalid argument)".
std::string describe(cudaError_t result);

// Makes `device` current on this thread for a scope (CUDA's current device is per thread, and
// engine threads may have chosen another), restoring the previous one afterwards.
class DeviceScope {
public:
  explicit DeviceScope(int device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

private:
  int previous_ = -1;
};

}  // namespace rankmesh::cuda
