// Small payloads of one message cut from one block of memory (Tensor::part): one allocation
// and one release per message instead of one per tensor, on the path every small message takes
// (a sender's copies for its peer, the landing tensors of a shm or tcp receiver).
//
// A receiver keeps all of a block while it keeps any part of it, so only tensors of at most
// kSharedBytes share one, and a block is made only for two of them or more. Used in two passes
// over a message's tensors: count() each that may share, allocate(), then, for each tensor i
// in order, take() its memory where shares(i).
#pragma once

#include <cstddef>
#include <cstdint>

#include "rankmesh/tensor.hpp"

namespace rankmesh {

class PayloadBlock {
public:
  static constexpr std::size_t kSharedBytes = 64 * 1024;

  // Whether a tensor of `nbytes` is small enough to share a block (callers add their own terms).
  static bool small(std::size_t nbytes) noexcept { return nbytes != 0 && nbytes <= kSharedBytes; }

  // Counts the message's tensor `index`, of `nbytes`, in the block (only the first kMarked can).
  void count(std::size_t index, std::size_t nbytes) noexcept {
    if (index >= kMarked) return;
    marked_ |= std::uint64_t{1} << index;
    bytes_ += aligned(nbytes);
    ++counted_;
  }
  // The block for the tensors counted, from `allocate` (none for fewer than two).
  void allocate(const Allocator& allocate) {
    if (counted_ >= 2) block_ = allocate(Shape{static_cast<std::int64_t>(bytes_)}, DType::u8);
  }
  // Whether tensor `index` takes its memory from the block.
  bool shares(std::size_t index) const noexcept {
    return block_.defined() && index < kMarked && (marked_ >> index & 1) != 0;
  }
  // The memory of the next tensor that shares, in order: a part of the block.
  Tensor take(const Shape& shape, DType dtype) {
    Tensor part = block_.part(taken_, shape, dtype);
    taken_ += aligned(part.nbytes());
    return part;
  }

private:
  static constexpr std::size_t kMarked = 64;  // a bit of marked_ each
  // Each part starts as aligned as a tensor of its own (Tensor::empty, the buffer pool).
  static constexpr std::size_t kAlignment = 64;
  static std::size_t aligned(std::size_t nbytes) noexcept {
    return (nbytes + kAlignment - 1) & ~(kAlignment - 1);
  }

  std::uint64_t marked_ = 0;
  std::size_t bytes_ = 0;
  std::size_t counted_ = 0;
  std::size_t taken_ = 0;
  Tensor block_;
};

}  // namespace rankmesh
