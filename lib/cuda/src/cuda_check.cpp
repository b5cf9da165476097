#include "cuda_check.hpp"

#include "rankmesh/error.hpp"

namespace rankmesh::cuda {

std::string describe(cudaError_t result) {
  return std::string(cudaGetErrorName(result)) + " (" + cudaGetErrorString(result) + ")";
}

void check(cudaError_t result, const char* what, int device) {
  if (result == cudaSuccess) return;
  // Clears the per-thread last error of non-sticky failures, so that it does not show up later
  // attached to an unrelated call.
  (void)cudaGetLastError();
  throw Error(Errc::device, std::string(what) + " on cuda:" + std::to_string(device) + ": " +
                                describe(result));
}

DeviceScope::DeviceScope(int device) {
  check(cudaGetDevice(&previous_), "cudaGetDevice", device);
  if (previous_ == device) {
    previous_ = -1;  // nothing to restore
    return;
  }
  check(cudaSetDevice(device), "cudaSetDevice", device);
}

DeviceScope::~DeviceScope() {
  if (previous_ >= 0) (void)cudaSetDevice(previous_);
}

}  // namespace rankmesh::cuda
