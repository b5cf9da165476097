#include "tensor_ops.hpp"

#include <cstring>
#include <string>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

// A tensor seen as [outer, rows, inner] around `dim`, in bytes for inner.
struct Around {
  std::int64_t outer = 1;
  std::int64_t rows = 0;
  std::size_t row_bytes = 0;
};

Around around(const Tensor& t, int dim) {
  Around a;
  for (int i = 0; i < dim; ++i) a.outer *= t.shape()[i];
  a.rows = t.shape()[dim];
  std::size_t inner = dtype_size(t.dtype());
  for (int i = dim + 1; i < t.shape().rank(); ++i) inner *= static_cast<std::size_t>(t.shape()[i]);
  a.row_bytes = inner;
  return a;
}

Tensor fresh(const Shape& shape, DType dtype, const Allocator& allocate) {
  return allocate ? allocate(shape, dtype) : Tensor::empty(shape, dtype);
}

void check_host(const Tensor& t, const char* what) {
  if (!t.defined()) throw Error(Errc::invalid_argument, std::string(what) + ": undefined tensor");
  if (t.device().type != DeviceType::cpu)
    throw Error(Errc::invalid_argument,
                std::string(what) + ": tensor on " + to_string(t.device()) + ", host memory expected");
}

}  // namespace

void check_dim(const Tensor& tensor, int dim, const char* what) {
  if (dim < 0 || dim >= tensor.shape().rank())
    throw Error(Errc::invalid_argument, std::string(what) + ": dim " + std::to_string(dim) +
                                            " is outside a tensor of shape " +
                                            to_string(tensor.shape()));
}

Tensor clone(const Tensor& tensor) {
  check_host(tensor, "clone");
  Tensor out = Tensor::empty(tensor.shape(), tensor.dtype());
  if (tensor.nbytes() != 0) std::memcpy(out.data(), tensor.data(), tensor.nbytes());
  return out;
}

Tensor narrow(const Tensor& tensor, int dim, std::int64_t start, std::int64_t length,
              const Allocator& allocate) {
  check_host(tensor, "narrow");
  check_dim(tensor, dim, "narrow");
  Around a = around(tensor, dim);
  if (start < 0 || length < 0 || start + length > a.rows)
    throw Error(Errc::invalid_argument, "narrow: rows [" + std::to_string(start) + ", " +
                                            std::to_string(start + length) + ") outside dim " +
                                            std::to_string(dim) + " of " + to_string(tensor.shape()));
  Shape shape = tensor.shape();
  shape.set(dim, length);
  Tensor out = fresh(shape, tensor.dtype(), allocate);
  const std::size_t block = static_cast<std::size_t>(length) * a.row_bytes;
  if (block == 0) return out;
  const auto* src = static_cast<const std::byte*>(tensor.data());
  auto* dst = static_cast<std::byte*>(out.data());
  for (std::int64_t o = 0; o < a.outer; ++o) {
    std::memcpy(dst + static_cast<std::size_t>(o) * block,
                src + (static_cast<std::size_t>(o * a.rows + start)) * a.row_bytes, block);
  }
  return out;
}

Tensor concat(std::span<const Tensor> parts, int dim, const Allocator& allocate) {
  if (parts.empty()) throw Error(Errc::invalid_argument, "concat: no tensors");
  const Tensor& first = parts.front();
  check_host(first, "concat");
  check_dim(first, dim, "concat");
  Shape shape = first.shape();
  std::int64_t rows = 0;
  for (const Tensor& part : parts) {
    check_host(part, "concat");
    bool same = part.dtype() == first.dtype() && part.shape().rank() == shape.rank();
    for (int i = 0; same && i < shape.rank(); ++i) same = i == dim || part.shape()[i] == shape[i];
    if (!same)
      throw Error(Errc::invalid_argument, "concat: " + to_string(part.shape()) + " " +
                                              to_string(part.dtype()) + " does not fit " +
                                              to_string(shape) + " " + to_string(first.dtype()) +
                                              " along dim " + std::to_string(dim));
    rows += part.shape()[dim];
  }
  shape.set(dim, rows);
  Tensor out = fresh(shape, first.dtype(), allocate);
  Around whole = around(out, dim);
  auto* dst = static_cast<std::byte*>(out.data());
  std::int64_t row = 0;
  for (const Tensor& part : parts) {
    Around a = around(part, dim);
    const std::size_t block = static_cast<std::size_t>(a.rows) * a.row_bytes;
    const auto* src = static_cast<const std::byte*>(part.data());
    for (std::int64_t o = 0; o < a.outer && block != 0; ++o) {
      std::memcpy(dst + static_cast<std::size_t>(o * whole.rows + row) * whole.row_bytes,
                  src + static_cast<std::size_t>(o) * block, block);
    }
    row += a.rows;
  }
  return out;
}

}  // namespace rankmesh
