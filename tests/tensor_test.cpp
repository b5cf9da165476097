#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "rankmesh/error.hpp"
#include "rankmesh/tensor.hpp"

using namespace rankmesh;

namespace {

// The code of the Error that `action` throws; nothing when it throws none.
std::optional<Errc> code_of_error(auto&& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.code();
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("every dtype has a size, a torch name and a wire code that map back to it") {
  struct Expected {
    DType dtype;
    std::size_t size;
    const char* name;
  };
  const Expected all[] = {
      {DType::f32, 4, "float32"},
      {DType::f16, 2, "float16"},
      {DType::bf16, 2, "bfloat16"},
      {DType::f64, 8, "float64"},
      {DType::i8, 1, "int8"},
      {DType::i16, 2, "int16"},
      {DType::i32, 4, "int32"},
      {DType::i64, 8, "int64"},
      {DType::u8, 1, "uint8"},
      {DType::boolean, 1, "bool"},
      {DType::fp8_e4m3, 1, "float8_e4m3fn"},
      {DType::fp8_e5m2, 1, "float8_e5m2"},
  };
  static_assert(std::size(all) == kDTypeCount);
  for (const Expected& e : all) {
    CAPTURE(e.name);
    CHECK(dtype_size(e.dtype) == e.size);
    CHECK(std::string(to_string(e.dtype)) == e.name);
    CHECK(dtype_from_string(e.name) == e.dtype);
    CHECK(dtype_from_code(static_cast<std::uint64_t>(e.dtype)) == e.dtype);
  }
  CHECK_FALSE(dtype_from_string("float128"));
  CHECK_FALSE(dtype_from_code(kDTypeCount));
  CHECK_FALSE(dtype_from_code(std::numeric_limits<std::uint64_t>::max()));
}

TEST_CASE("a device is a type and an index, written type:index") {
  CHECK(to_string(Device{}) == "cpu:0");
  CHECK(to_string(Device{DeviceType::cuda, 3}) == "cuda:3");
  CHECK(std::string(to_string(DeviceType::npu)) == "npu");
  CHECK(std::string(to_string(DeviceType::xpu)) == "xpu");
  CHECK(device_type_from_code(1) == DeviceType::cuda);
  CHECK_FALSE(device_type_from_code(kDeviceTypeCount));
  CHECK(Device{DeviceType::cuda, 1} != Device{DeviceType::cuda, 2});
}

TEST_CASE("a shape holds up to kMaxRank non-negative dimensions") {
  const Shape shape{2, 3, 4};
  CHECK(shape.rank() == 3);
  CHECK(shape[1] == 3);
  CHECK(shape.numel() == 24);
  CHECK(to_string(shape) == "[2, 3, 4]");
  CHECK(Shape{}.numel() == 1);
  CHECK(to_string(Shape{}) == "[]");
  CHECK(Shape{0, 5}.numel() == 0);

  Shape grown;
  grown.push_back(2);
  grown.push_back(3);
  grown.push_back(4);
  CHECK(grown == shape);
  grown.set(0, 7);
  CHECK(grown != shape);
  CHECK(Shape{2, 3} != Shape{2, 3, 1});

  CHECK(code_of_error([] { Shape{2, -1}; }) == Errc::invalid_argument);
  CHECK(code_of_error([] { Shape{1, 1, 1, 1, 1, 1, 1, 1, 1}; }) == Errc::invalid_argument);
  CHECK(code_of_error([&] { grown.set(3, 1); }) == Errc::invalid_argument);
  CHECK(code_of_error([&] { grown.set(0, -2); }) == Errc::invalid_argument);
  const std::int64_t big = std::int64_t{1} << 40;
  CHECK(code_of_error([&] { Shape{big, big}.numel(); }) == Errc::limit_exceeded);
}

TEST_CASE("Tensor::empty gives zeroed, 64-byte aligned host memory of shape x dtype") {
  for (DType dtype : {DType::f32, DType::bf16, DType::f64, DType::u8}) {
    const Tensor t = Tensor::empty({3, 5}, dtype);
    CHECK(t.defined());
    CHECK(t.device() == Device{});
    CHECK(t.nbytes() == 15 * dtype_size(dtype));
    CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
    const auto* bytes = t.data_as<std::uint8_t>();
    CHECK(std::all_of(bytes, bytes + t.nbytes(), [](std::uint8_t b) { return b == 0; }));
  }
}

TEST_CASE("an empty tensor keeps its shape") {
  const Tensor t = Tensor::empty({4, 0, 2}, DType::i32);
  CHECK(t.defined());
  CHECK(t.shape() == Shape{4, 0, 2});
  CHECK(t.numel() == 0);
  CHECK(t.nbytes() == 0);
}

TEST_CASE("Tensor::empty refuses a size that cannot exist") {
  const std::int64_t huge = std::numeric_limits<std::int64_t>::max() / 2;
  CHECK(code_of_error([&] { Tensor::empty({huge}, DType::f64); }) == Errc::limit_exceeded);
}

TEST_CASE("a wrapped tensor runs its deleter once, when the last copy goes away") {
  float storage[6] = {1, 2, 3, 4, 5, 6};
  int deleted = 0;
  void* deleted_pointer = nullptr;
  {
    const Tensor t =
        Tensor::wrap(storage, {2, 3}, DType::f32, Device{DeviceType::cuda, 1}, [&](void* p) {
          ++deleted;
          deleted_pointer = p;
        });
    CHECK(t.data() == storage);
    CHECK(t.device() == Device{DeviceType::cuda, 1});
    Tensor copy = t;
    CHECK(copy.shares_storage_with(t));
    CHECK_FALSE(copy.shares_storage_with(Tensor::empty({2, 3}, DType::f32)));
    copy = Tensor();
    CHECK(deleted == 0);
  }
  CHECK(deleted == 1);
  CHECK(deleted_pointer == storage);
}

TEST_CASE("an adopted TensorMemory is released once, when the last tensor seeing it goes") {
  // An owner's own bookkeeping (a buffer pool's block does this): nothing is allocated per tensor.
  struct CountingMemory : TensorMemory {
    explicit CountingMemory(void* data) : TensorMemory(data, &CountingMemory::released) {}
    static void released(TensorMemory* memory) noexcept {
      ++static_cast<CountingMemory*>(memory)->releases;
    }
    int releases = 0;
  };
  float storage[6] = {1, 2, 3, 4, 5, 6};
  CountingMemory memory(storage);
  {
    Tensor t = Tensor::adopt(memory, {2, 3}, DType::f32, Device{});
    CHECK(t.data() == storage);
    CHECK(t.numel() == 6);
    Tensor copy = t;
    Tensor view = t.view({6});
    CHECK(view.shares_storage_with(t));
    Tensor moved = std::move(copy);
    CHECK_FALSE(copy.defined());  // NOLINT(bugprone-use-after-move): a moved-from tensor is empty
    CHECK(moved.shares_storage_with(t));
    const Tensor& same = moved;
    moved = same;  // self-assignment keeps the one hold it has
    moved = std::move(view);
    t = Tensor();
    CHECK(memory.releases == 0);
  }
  CHECK(memory.releases == 1);

  // Holds taken and dropped from many threads at once still end in exactly one release.
  CountingMemory shared(storage);
  {
    const Tensor first = Tensor::adopt(shared, {6}, DType::f32, Device{});
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
      threads.emplace_back([&first] {
        for (int j = 0; j < 10000; ++j) Tensor copy = first;
      });
    for (std::thread& thread : threads) thread.join();
    CHECK(shared.releases == 0);
  }
  CHECK(shared.releases == 1);
}

TEST_CASE("wrap accepts null data only for a tensor without elements") {
  CHECK(Tensor::wrap(nullptr, {0, 3}, DType::f32, Device{}, nullptr).defined());
  CHECK(code_of_error([] { Tensor::wrap(nullptr, {1}, DType::f32, Device{}, nullptr); }) ==
        Errc::invalid_argument);
}

TEST_CASE("equal compares shape, dtype, device and bytes") {
  Tensor a = Tensor::empty({2, 2}, DType::i32);
  Tensor b = Tensor::empty({2, 2}, DType::i32);
  CHECK(equal(a, b));
  b.data_as<std::int32_t>()[3] = 1;
  CHECK_FALSE(equal(a, b));
  a.data_as<std::int32_t>()[3] = 1;
  CHECK(equal(a, b));
  CHECK_FALSE(equal(a, Tensor::empty({4}, DType::i32)));
  CHECK_FALSE(equal(a, Tensor::empty({2, 2}, DType::f32)));
  CHECK_FALSE(equal(a, Tensor()));
  CHECK(equal(Tensor(), Tensor()));
  CHECK(equal(Tensor::empty({0}, DType::f32), Tensor::empty({0}, DType::f32)));
}

TEST_CASE("equal refuses to read the bytes of distinct tensors off the host") {
  std::int32_t x = 1, y = 1;
  const Tensor a = Tensor::wrap(&x, {1}, DType::i32, Device{DeviceType::cuda, 0}, nullptr);
  const Tensor b = Tensor::wrap(&y, {1}, DType::i32, Device{DeviceType::cuda, 0}, nullptr);
  CHECK(equal(a, a));
  CHECK(code_of_error([&] { equal(a, b); }) == Errc::invalid_argument);
}

TEST_CASE("a part sees its tensor's bytes from an offset and holds the whole memory") {
  std::uint8_t storage[256] = {};
  for (int i = 0; i < 256; ++i) storage[i] = static_cast<std::uint8_t>(i);
  int deleted = 0;
  Tensor a, b;
  {
    const Tensor whole =
        Tensor::wrap(storage, {256}, DType::u8, Device{}, [&](void*) { ++deleted; });
    a = whole.part(64, {4, 2}, DType::i32);  // bytes 64..95
    b = whole.part(192, {64}, DType::u8);    // the last 64 bytes, up to the end exactly
    CHECK(a.data() == storage + 64);
    CHECK(a.shape() == Shape{4, 2});
    CHECK(a.dtype() == DType::i32);
    CHECK(a.nbytes() == 32);
    CHECK(b.data() == storage + 192);
    CHECK(a.shares_storage_with(whole));
    CHECK(a.shares_storage_with(b));
    CHECK(whole.part(256, {0}, DType::f32).numel() == 0);  // nothing, at the end
    CHECK(code_of_error([&] { whole.part(193, {64}, DType::u8); }) == Errc::invalid_argument);
    CHECK(code_of_error([&] { whole.part(0, {65}, DType::f32); }) == Errc::invalid_argument);
    CHECK(code_of_error([&] { whole.part(257, {0}, DType::u8); }) == Errc::invalid_argument);
    CHECK(code_of_error([&] { Tensor().part(0, {0}, DType::u8); }) == Errc::invalid_argument);
  }
  CHECK(deleted == 0);  // the parts hold the memory
  // A part's view and a moved part keep its offset.
  CHECK(a.view({8}).data() == storage + 64);
  Tensor moved = std::move(b);
  CHECK(moved.data() == storage + 192);
  CHECK(b.data() == nullptr);
  CHECK(static_cast<const std::uint8_t*>(moved.data())[0] == 192);
  a = Tensor();
  CHECK(deleted == 0);
  moved = Tensor();
  CHECK(deleted == 1);
}

TEST_CASE("a view sees the same memory with another shape of as many elements") {
  const Tensor t = Tensor::empty({2, 6}, DType::f32);
  const Tensor v = t.view({3, 4});
  CHECK(v.shape() == Shape{3, 4});
  CHECK(v.data() == t.data());
  CHECK(v.shares_storage_with(t));
  CHECK(code_of_error([&] { t.view({5}); }) == Errc::invalid_argument);
}
