#include "rankmesh/tensor.hpp"

#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

constexpr std::size_t kAlignment = 64;

void check_dim(std::int64_t dim) {
  if (dim < 0) {
    throw Error(Errc::invalid_argument, "shape dimension " + std::to_string(dim) + " is negative");
  }
}

}  // namespace

Shape::Shape(std::initializer_list<std::int64_t> dims) {
  for (std::int64_t dim : dims) push_back(dim);
}

void Shape::refuse(std::int64_t dim) const {
  if (rank_ == kMaxRank) {
    throw Error(Errc::invalid_argument,
                "shape has more than " + std::to_string(kMaxRank) + " dimensions");
  }
  throw Error(Errc::invalid_argument, "shape dimension " + std::to_string(dim) + " is negative");
}

void Shape::set(int i, std::int64_t dim) {
  if (i < 0 || i >= rank_) {
    throw Error(Errc::invalid_argument, "dimension index " + std::to_string(i) +
                                            " is outside a shape of rank " + std::to_string(rank_));
  }
  check_dim(dim);
  dims_[static_cast<std::size_t>(i)] = dim;
}

void Shape::overflow() const {
  throw Error(Errc::limit_exceeded, "element count of shape " + to_string(*this) + " overflows 64 bits");
}

std::string to_string(const Shape& shape) {
  std::string out = "[";
  for (int i = 0; i < shape.rank(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

struct Tensor::Storage {
  void* data;
  Deleter deleter;

  Storage(void* d, Deleter del) : data(d), deleter(std::move(del)) {}
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
    if (deleter) deleter(data);
  }
};

Tensor::Tensor(std::shared_ptr<Storage> storage, Shape shape, DType dtype, Device device)
    : storage_(std::move(storage)), shape_(shape), numel_(shape_.numel()), dtype_(dtype),
      device_(device) {}

Tensor Tensor::empty(Shape shape, DType dtype) {
  const auto numel = static_cast<std::uint64_t>(shape.numel());
  const std::size_t element = dtype_size(dtype);
  if (numel > (std::numeric_limits<std::size_t>::max() - kAlignment) / element) {
    throw Error(Errc::limit_exceeded, "a tensor of shape " + to_string(shape) + " and dtype " +
                                          to_string(dtype) + " does not fit in memory");
  }
  // calloc rather than aligned new + memset: large blocks come from the kernel already zeroed,
  // so a fresh tensor costs no pass over its pages.
  void* base = std::calloc(numel * element + kAlignment - 1, 1);
  if (base == nullptr) throw std::bad_alloc();
  const auto address = reinterpret_cast<std::uintptr_t>(base);
  void* aligned = reinterpret_cast<void*>((address + kAlignment - 1) & ~(kAlignment - 1));
  auto storage = std::make_shared<Storage>(aligned, [base](void*) { std::free(base); });
  return Tensor(std::move(storage), shape, dtype, Device{});
}

Tensor Tensor::wrap(void* data, Shape shape, DType dtype, Device device, Deleter deleter) {
  if (data == nullptr && shape.numel() != 0) {
    throw Error(Errc::invalid_argument,
                "wrap: null data for a tensor of shape " + to_string(shape) + " with elements");
  }
  auto storage = std::make_shared<Storage>(data, std::move(deleter));
  return Tensor(std::move(storage), shape, dtype, device);
}

void* Tensor::data() const noexcept { return storage_ ? storage_->data : nullptr; }

Tensor Tensor::view(Shape shape) const {
  if (shape.numel() != numel())
    throw Error(Errc::invalid_argument, "cannot view " + to_string(shape_) + " as " +
                                            to_string(shape) + ": element counts differ");
  Tensor out(storage_, shape, dtype_, device_);
  out.ready_ = ready_;
  return out;
}

bool Tensor::shares_storage_with(const Tensor& other) const noexcept {
  return storage_ != nullptr && storage_ == other.storage_;
}

bool equal(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined()) return a.defined() == b.defined();
  if (a.shape() != b.shape() || a.dtype() != b.dtype() || a.device() != b.device()) return false;
  if (a.data() == b.data()) return true;
  if (a.device().type != DeviceType::cpu) {
    throw Error(Errc::invalid_argument, "equal: cannot read the bytes of tensors on " +
                                            to_string(a.device()) + " from the host");
  }
  const std::size_t n = a.nbytes();
  return n == 0 || std::memcmp(a.data(), b.data(), n) == 0;
}

}  // namespace rankmesh
