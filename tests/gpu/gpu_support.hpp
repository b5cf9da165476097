// Support for the GPU test cases: the visible skip where no CUDA device is present, and the
// device tensor helpers (cuda_tensors.hpp) they share with rankmesh-gpu-ranks.
#pragma once

#include <doctest/doctest.h>

#include <cstdio>

#include "cuda_tensors.hpp"
#include "rankmesh/cuda_backend.hpp"

namespace rankmesh::test {

// True when a CUDA device can be used. Otherwise prints the one line that says why this case
// did not run (ctest marks the case skipped by it) and the case passes without running.
inline bool cuda_present() {
  if (CudaBackend::device_count() > 0) return true;
  std::printf("SKIPPED: no CUDA device (%s)\n", CudaBackend::unavailable_reason().c_str());
  std::fflush(stdout);
  return false;
}

}  // namespace rankmesh::test

// First statement of every GPU test case.
#define RANKMESH_REQUIRE_CUDA_OR_SKIP()         \
  do {                                          \
    if (!rankmesh::test::cuda_present()) return; \
  } while (0)
