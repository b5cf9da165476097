// Stream ordering on a real GPU: a copy on another stream never reads the bytes a still-running
// kernel writes, whether it waits on the producer's event itself or through the tensor's ready
// event.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "gpu_support.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace {

constexpr std::size_t kWords = std::size_t{1} << 20;  // 4 MiB
constexpr std::uint32_t kOld = 0x01010101u;
constexpr std::uint32_t kNew = 0xC0FFEE00u;
constexpr int kSlowMs = 200;

// A buffer holding kOld everywhere, then (on `producer`, behind the slow kernel) kNew.
Tensor overwritten_slowly(CudaBackend& cuda, Stream& producer) {
  Tensor t = cuda.allocate({static_cast<std::int64_t>(kWords)}, DType::i32);
  std::vector<std::uint32_t> old(kWords, kOld);
  cuda.copy_from_host(old.data(), t, producer)->synchronize(default_timeout());
  t.set_ready_event(nullptr);  // kOld is in place: ready now
  launch_slow_fill_u32(t.data(), kWords, kNew, kSlowMs, CudaBackend::native_stream(producer));
  return t;
}

std::size_t words_not(const std::uint32_t* words, std::uint32_t value) {
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < kWords; ++i) wrong += words[i] != value;
  return wrong;
}

}  // namespace

TEST_CASE("a copy on stream B after B waits on A's event reads the slow kernel's bytes, never the old ones") {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  CudaBackend cuda;
  auto a = cuda.create_stream();
  auto b = cuda.create_stream();
  Tensor pinned = cuda.allocate_pinned({static_cast<std::int64_t>(kWords)}, DType::i32);
  REQUIRE(pinned.device() == Device{DeviceType::cpu, 0});

  SUBCASE("B waits on the event itself; the tensor carries none") {
    Tensor t = overwritten_slowly(cuda, *a);
    auto produced = a->record();
    b->wait(*produced);
    auto copied = cuda.copy_to_host(t, pinned.data(), *b);
    CHECK_FALSE(produced->query());  // the kernel spins for kSlowMs: still running
    copied->synchronize(default_timeout());
    CHECK(produced->query());
    CHECK(words_not(pinned.data_as<std::uint32_t>(), kNew) == 0);
  }
  SUBCASE("the copy follows the tensor's ready event") {
    Tensor t = overwritten_slowly(cuda, *a);
    t.set_ready_event(a->record());
    auto copied = cuda.copy_to_host(t, pinned.data(), *b);
    CHECK_FALSE(t.ready_event()->query());
    copied->synchronize(default_timeout());
    CHECK(words_not(pinned.data_as<std::uint32_t>(), kNew) == 0);
  }
  SUBCASE("into pageable host memory, and device to device on B") {
    Tensor t = overwritten_slowly(cuda, *a);
    t.set_ready_event(a->record());
    Tensor copy = cuda.allocate(t.shape(), t.dtype());
    cuda.copy(t, copy, *b);
    std::vector<std::uint32_t> pageable(kWords, 0);
    cuda.copy_to_host(copy, pageable.data(), *b)->synchronize(default_timeout());
    CHECK(words_not(pageable.data(), kNew) == 0);
  }
}

TEST_CASE("a copy from the host into a buffer a slow kernel still reads waits for the kernel") {
  // The other direction: the upload on B must not land before the producer on A has finished
  // with the buffer; the kernel's kNew is then overwritten by the upload, never the reverse.
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  CudaBackend cuda;
  auto a = cuda.create_stream();
  auto b = cuda.create_stream();
  Tensor t = overwritten_slowly(cuda, *a);
  t.set_ready_event(a->record());
  std::vector<std::uint32_t> later(kWords, kOld ^ 0xFFFFFFFFu);
  cuda.copy_from_host(later.data(), t, *b)->synchronize(default_timeout());
  std::vector<std::uint32_t> back(kWords, 0);
  cuda.copy_to_host(t, back.data(), *b)->synchronize(default_timeout());
  CHECK(words_not(back.data(), kOld ^ 0xFFFFFFFFu) == 0);
}
