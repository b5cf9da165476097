// Host-side reshaping of tensors that collectives need: copies, slices and concatenations
// along a dimension. Each returns a fresh contiguous tensor, from `allocate` when given (a pool
// of warm memory: fresh pages cost more to fill than the copy itself), else Tensor::empty.
#pragma once

#include <cstdint>
#include <span>

#include "rankmesh/tensor.hpp"

namespace rankmesh {

// A fresh tensor with the same shape, dtype, device and bytes.
Tensor clone(const Tensor& tensor);

// Rows [start, start + length) along `dim`. Throws Error(invalid_argument) out of range.
Tensor narrow(const Tensor& tensor, int dim, std::int64_t start, std::int64_t length,
              const Allocator& allocate = {});

// Concatenation along `dim`; all parts share dtype and every other dimension.
Tensor concat(std::span<const Tensor> parts, int dim, const Allocator& allocate = {});

// Checks 0 <= dim < tensor rank, naming `what` in the error.
void check_dim(const Tensor& tensor, int dim, const char* what);

}  // namespace rankmesh
