// Tensor: contiguous bytes + shape + dtype + device, with shared ownership of the bytes.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>

#include "rankmesh/device.hpp"
#include "rankmesh/dtype.hpp"

namespace rankmesh {

class Event;  // rankmesh/event.hpp

// A shape of up to kMaxRank dimensions, stored inline so that describing a tensor never
// allocates (metadata is built and decoded per message).
class Shape {
public:
  static constexpr int kMaxRank = 8;

  Shape() = default;
  // Throws Error(invalid_argument) for more than kMaxRank dimensions or a negative one.
  Shape(std::initializer_list<std::int64_t> dims);

  int rank() const noexcept { return rank_; }
  std::int64_t operator[](int i) const noexcept { return dims_[static_cast<std::size_t>(i)]; }
  const std::int64_t* begin() const noexcept { return dims_.data(); }
  const std::int64_t* end() const noexcept { return dims_.data() + rank_; }
  // Appends a dimension; same checks as the constructor.
  void push_back(std::int64_t dim) {
    if (rank_ == kMaxRank || dim < 0) refuse(dim);
    dims_[static_cast<std::size_t>(rank_++)] = dim;
  }
  void set(int i, std::int64_t dim);
  // Product of the dimensions (1 for rank 0). Throws Error(limit_exceeded) on overflow.
  // Inline, as push_back and ==: every message describes its tensors with them.
  std::int64_t numel() const {
    std::int64_t product = 1;
    for (std::int64_t dim : *this)
      if (__builtin_mul_overflow(product, dim, &product)) overflow();
    return product;
  }

  bool operator==(const Shape& other) const noexcept {
    if (rank_ != other.rank_) return false;
    for (int i = 0; i < rank_; ++i)
      if (dims_[static_cast<std::size_t>(i)] != other.dims_[static_cast<std::size_t>(i)]) return false;
    return true;
  }

private:
  [[noreturn]] void refuse(std::int64_t dim) const;  // push_back's error
  [[noreturn]] void overflow() const;                // numel's
  std::array<std::int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

std::string to_string(const Shape& shape);  // "[2, 3]"

// The bookkeeping of a tensor's memory, shared by every Tensor that sees it: where the bytes
// are, how many Tensors hold them, and what to do when the last one lets go. An owner that
// manages its memory itself (a buffer pool's block, recycled per message) embeds one, so that
// handing out a tensor allocates nothing; Tensor::wrap makes one around a deleter.
class TensorMemory {
public:
  // Called once, when the last Tensor holding `memory` goes away.
  using Release = void (*)(TensorMemory* memory) noexcept;

  TensorMemory(void* data, Release release) noexcept : data_(data), release_(release) {}
  TensorMemory(const TensorMemory&) = delete;
  TensorMemory& operator=(const TensorMemory&) = delete;

  void* data() const noexcept { return data_; }

private:
  friend class Tensor;
  std::atomic<std::size_t> holders_{0};
  void* data_;
  Release release_;
};

class Tensor {
public:
  using Deleter = std::function<void(void*)>;

  // An undefined tensor (no storage); defined() is false.
  Tensor() = default;

  // Fresh, zero-initialised host memory of shape x dtype, 64-byte aligned.
  static Tensor empty(Shape shape, DType dtype);

  // Wraps memory the caller owns (the DLPack idea): `deleter(data)` runs when the last Tensor
  // sharing it goes away. `data` may be null only for a tensor of zero elements.
  static Tensor wrap(void* data, Shape shape, DType dtype, Device device, Deleter deleter);
  // A tensor over memory whose bookkeeping its owner keeps (see TensorMemory): `memory` must
  // not be held by any Tensor yet, and its release runs when the last one goes. Throws
  // Error(limit_exceeded) for a shape whose element count overflows; the caller then still
  // owns `memory`.
  static Tensor adopt(TensorMemory& memory, Shape shape, DType dtype, Device device);

  Tensor(const Tensor& other) noexcept
      : storage_(other.storage_), data_(other.data_), shape_(other.shape_), numel_(other.numel_),
        nbytes_(other.nbytes_), dtype_(other.dtype_), device_(other.device_), ready_(other.ready_) {
    hold();
  }
  Tensor(Tensor&& other) noexcept
      : storage_(std::exchange(other.storage_, nullptr)),
        data_(std::exchange(other.data_, nullptr)), shape_(other.shape_),
        numel_(other.numel_), nbytes_(other.nbytes_), dtype_(other.dtype_), device_(other.device_),
        ready_(std::move(other.ready_)) {}
  Tensor& operator=(const Tensor& other) noexcept {
    if (this != &other) *this = Tensor(other);
    return *this;
  }
  Tensor& operator=(Tensor&& other) noexcept {
    if (this != &other) {
      // The old memory is let go last: its release may run a deleter that owns `other`.
      TensorMemory* old = std::exchange(storage_, std::exchange(other.storage_, nullptr));
      data_ = std::exchange(other.data_, nullptr);
      shape_ = other.shape_;
      numel_ = other.numel_;
      nbytes_ = other.nbytes_;
      dtype_ = other.dtype_;
      device_ = other.device_;
      ready_ = std::move(other.ready_);
      release(old);
    }
    return *this;
  }
  ~Tensor() { let_go(); }

  bool defined() const noexcept { return storage_ != nullptr; }
  void* data() const noexcept { return data_; }
  template <class T>
  T* data_as() const noexcept { return static_cast<T*>(data()); }
  const Shape& shape() const noexcept { return shape_; }
  DType dtype() const noexcept { return dtype_; }
  Device device() const noexcept { return device_; }
  std::int64_t numel() const noexcept { return numel_; }
  std::size_t nbytes() const noexcept { return nbytes_; }
  // True when both share the same underlying memory.
  bool shares_storage_with(const Tensor& other) const noexcept;
  // The same memory seen with another shape of as many elements (and the same ready event).
  // Throws Error(invalid_argument) when the element counts differ.
  Tensor view(Shape shape) const;
  // A tensor of `shape` x `dtype` over this one's bytes from `byte_offset` on, sharing its
  // memory (held until the last of them goes) and its ready event: one allocation cut into
  // several tensors. Throws Error(invalid_argument) for an undefined tensor or bytes past the end.
  Tensor part(std::size_t byte_offset, const Shape& shape, DType dtype) const;

  // The event that completes when the work producing this tensor's bytes has finished (the
  // event of the stream that produced it). Null means the bytes are ready now. Readers make
  // their stream wait on it; they never synchronize a whole device.
  const std::shared_ptr<Event>& ready_event() const noexcept { return ready_; }
  void set_ready_event(std::shared_ptr<Event> event) noexcept { ready_ = std::move(event); }

private:
  // Takes one hold on `storage` (null for an undefined tensor); the tensor's bytes start at
  // `data` (the memory's own start unless a part()); `numel` is the shape's, counted by the
  // caller (which throws on overflow before anything is held).
  Tensor(TensorMemory* storage, void* data, const Shape& shape, std::int64_t numel, DType dtype,
         Device device) noexcept
      : storage_(storage), data_(data), shape_(shape), numel_(numel),
        nbytes_(static_cast<std::size_t>(numel) * dtype_size(dtype)), dtype_(dtype),
        device_(device) {
    hold();
  }
  [[noreturn]] void refuse_part(std::size_t byte_offset, const Shape& shape, DType dtype) const;
  // Inline: every copy of a tensor along a message's path pays them. Taking a hold needs no
  // ordering (the holder already sees the bytes); the last release must see every write.
  void hold() const noexcept {
    if (storage_ != nullptr) storage_->holders_.fetch_add(1, std::memory_order_relaxed);
  }
  void let_go() noexcept { release(std::exchange(storage_, nullptr)); }
  static void release(TensorMemory* storage) noexcept {
    if (storage != nullptr && storage->holders_.fetch_sub(1, std::memory_order_acq_rel) == 1)
      storage->release_(storage);
  }

  TensorMemory* storage_ = nullptr;
  void* data_ = nullptr;  // the first byte: read per message, so not through storage_
  Shape shape_;
  // Of shape_ and dtype_, counted once: asked for on every hop of a message.
  std::int64_t numel_ = 0;
  std::size_t nbytes_ = 0;
  DType dtype_ = DType::f32;
  Device device_;
  std::shared_ptr<Event> ready_;
};

// Where fresh tensors come from (received data, copies for peers): host memory of exactly that
// shape and dtype.
using Allocator = std::function<Tensor(const Shape&, DType)>;

// Same shape, dtype, device and bytes (host memory only).
bool equal(const Tensor& a, const Tensor& b);

}  // namespace rankmesh
