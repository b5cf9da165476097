#include "rankmesh/tensor.hpp"

#include <algorithm>
#include <cstddef>
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

namespace {

// The TensorMemory of a tensor made by empty() or wrap(): the memory's own deleter, kept with the
// bookkeeping in one allocation.
struct DeletingMemory final : TensorMemory {
  DeletingMemory(void* data, Tensor::Deleter deleter)
      : TensorMemory(data, &DeletingMemory::release), deleter(std::move(deleter)) {}
  static void release(TensorMemory* memory) noexcept {
    auto* self = static_cast<DeletingMemory*>(memory);
    if (self->deleter) self->deleter(self->data());
    delete self;
  }
  Tensor::Deleter deleter;
};

}  // namespace

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
  DeletingMemory* storage = nullptr;
  try {
    storage = new DeletingMemory(aligned, [base](void*) { std::free(base); });
  } catch (...) {
    std::free(base);
    throw;
  }
  return Tensor(storage, aligned, shape, static_cast<std::int64_t>(numel), dtype, Device{});
}

Tensor Tensor::wrap(void* data, Shape shape, DType dtype, Device device, Deleter deleter) {
  const std::int64_t numel = shape.numel();  // throws before anything is made
  if (data == nullptr && numel != 0) {
    throw Error(Errc::invalid_argument,
                "wrap: null data for a tensor of shape " + to_string(shape) + " with elements");
  }
  return Tensor(new DeletingMemory(data, std::move(deleter)), data, shape, numel, dtype, device);
}

Tensor Tensor::adopt(TensorMemory& memory, Shape shape, DType dtype, Device device) {
  const std::int64_t numel = shape.numel();  // throws before the hold is taken
  return Tensor(&memory, memory.data(), shape, numel, dtype, device);
}

Tensor Tensor::view(Shape shape) const {
  if (shape.numel() != numel())
    throw Error(Errc::invalid_argument, "cannot view " + to_string(shape_) + " as " +
                                            to_string(shape) + ": element counts differ");
  Tensor out(storage_, data_, shape, numel_, dtype_, device_);
  out.ready_ = ready_;
  return out;
}

Tensor Tensor::part(std::size_t byte_offset, const Shape& shape, DType dtype) const {
  const std::int64_t numel = shape.numel();
  std::size_t bytes = 0;
  if (!defined() || byte_offset > nbytes() ||
      __builtin_mul_overflow(static_cast<std::size_t>(numel), dtype_size(dtype), &bytes) ||
      bytes > nbytes() - byte_offset) [[unlikely]]
    refuse_part(byte_offset, shape, dtype);
  Tensor out(storage_, static_cast<std::byte*>(data_) + byte_offset, shape, numel, dtype, device_);
  out.ready_ = ready_;
  return out;
}

void Tensor::refuse_part(std::size_t byte_offset, const Shape& shape, DType dtype) const {
  if (!defined()) throw Error(Errc::invalid_argument, "part: the tensor is undefined");
  throw Error(Errc::invalid_argument,
              "part: " + to_string(shape) + " " + to_string(dtype) + " from byte " +
                  std::to_string(byte_offset) + " does not fit in the " +
                  std::to_string(nbytes()) + " bytes of the tensor");
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
