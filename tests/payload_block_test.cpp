// PayloadBlock (transports/payload_block.hpp): the small payloads of one message cut from one
// allocation, each part aligned and in the order counted; fewer than two share nothing.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "payload_block.hpp"

using namespace rankmesh;

namespace {

// An allocator that counts its allocations.
struct Counting {
  int calls = 0;
  Allocator allocator() {
    return [this](const Shape& shape, DType dtype) {
      ++calls;
      return Tensor::empty(shape, dtype);
    };
  }
};

}  // namespace

TEST_CASE("payload block: the counted tensors are parts of one allocation, aligned, in order") {
  Counting counting;
  PayloadBlock block;
  const std::size_t sizes[] = {12, 256, 0, 1000, PayloadBlock::kSharedBytes + 4};
  for (std::size_t i = 0; i < 5; ++i)
    if (i != 2 && PayloadBlock::small(sizes[i])) block.count(i, sizes[i]);
  CHECK_FALSE(PayloadBlock::small(0));
  CHECK_FALSE(PayloadBlock::small(PayloadBlock::kSharedBytes + 1));
  CHECK(PayloadBlock::small(PayloadBlock::kSharedBytes));
  block.allocate(counting.allocator());
  CHECK(counting.calls == 1);
  CHECK(block.shares(0));
  CHECK(block.shares(1));
  CHECK_FALSE(block.shares(2));
  CHECK(block.shares(3));
  CHECK_FALSE(block.shares(4));
  const Tensor a = block.take({3}, DType::f32);
  const Tensor b = block.take({64}, DType::f32);
  const Tensor c = block.take({250}, DType::i32);
  CHECK(a.shares_storage_with(b));
  CHECK(b.shares_storage_with(c));
  std::vector<const Tensor*> parts{&a, &b, &c};
  for (const Tensor* t : parts) CHECK(reinterpret_cast<std::uintptr_t>(t->data()) % 64 == 0);
  CHECK(static_cast<const std::byte*>(b.data()) - static_cast<const std::byte*>(a.data()) == 64);
  CHECK(static_cast<const std::byte*>(c.data()) - static_cast<const std::byte*>(b.data()) == 256);
  CHECK(c.shape() == Shape{250});
}

TEST_CASE("payload block: one tensor alone, or one past the first 64, shares nothing") {
  Counting counting;
  PayloadBlock alone;
  alone.count(0, 64);
  alone.count(64, 64);  // beyond the tensors a block marks
  alone.allocate(counting.allocator());
  CHECK(counting.calls == 0);
  CHECK_FALSE(alone.shares(0));
  CHECK_FALSE(alone.shares(64));
}
