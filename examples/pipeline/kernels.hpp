// The GPU path's kernels (kernels.cu): the model's matmul and element-wise steps on f32 device
// memory, each launched on a caller's CUDA stream and returning at once; and the one ordering
// call they need. Plain C++ here, so that
// the rest of the example compiles without the toolkit's headers; `stream` is a cudaStream_t.
// A launch the device refuses throws Error(device).
#pragma once

#include <cstdint>

namespace pipeline::kernels {

// out (n x p) = a (n x k) * b (k x p), all row-major; out must not alias a or b.
void matmul(const float* a, const float* b, float* out, int n, int k, int p, void* stream);
// out[i] = a[i] + b[i] for i < count.
void add(const float* a, const float* b, float* out, std::int64_t count, void* stream);
// x[i] = tanh(x[i]) for i < count.
void activate(float* x, std::int64_t count, void* stream);
// x[i] = 0 for i < count.
void zero(float* x, std::int64_t count, void* stream);
// The work launched on `stream` from now on waits until the device reaches `cuda_event`
// (a cudaEvent_t, an Event's native_handle()).
void wait(void* stream, void* cuda_event);

}  // namespace pipeline::kernels
