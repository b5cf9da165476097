// CudaBackend's memory: the caching allocator reuses freed blocks (steady-state steps do not call
// cudaMalloc), pinned host tensors come from the staging pool, and an engine's own allocator
// (CudaMemoryHooks) replaces the cache.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "rankmesh/error.hpp"
#include "gpu_support.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

TEST_CASE("allocate, free, allocate the same size: the cached block is reused without cudaMalloc") {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  CudaBackend cuda;
  const Shape shape{1 << 20};  // 4 MiB of f32
  const std::size_t bytes = std::size_t{4} << 20;
  const void* first_address = nullptr;
  {
    Tensor first = cuda.allocate(shape, DType::f32);
    first_address = first.data();
    CHECK(cuda.memory_stats().device_in_use >= bytes);
  }
  const auto after_first = cuda.memory_stats();
  CHECK(after_first.device_mallocs >= 1);
  CHECK(after_first.device_cached >= bytes);
  for (int step = 0; step < 3; ++step) {
    CAPTURE(step);
    Tensor again = cuda.allocate(shape, DType::f32);
    const auto stats = cuda.memory_stats();
    CHECK(stats.device_mallocs == after_first.device_mallocs);
    CHECK(stats.device_in_use >= bytes);
    if (again.data() != first_address) MESSAGE("the cache handed out another block of the same size");
  }
  cuda.empty_cache();
  const auto emptied = cuda.memory_stats();
  CHECK(emptied.device_cached == 0);
  CHECK(emptied.device_frees > after_first.device_frees);
  CHECK(emptied.device_in_use == 0);
}

TEST_CASE("a block freed while a copy still reads it is not handed out before the copy has run") {
  // Stream-ordered reuse: dropping a tensor whose ready event is pending must not let the next
  // allocation overwrite bytes a queued copy has yet to read.
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  CudaBackend cuda;
  auto stream = cuda.create_stream();
  const std::size_t words = std::size_t{1} << 20;
  Tensor pinned = cuda.allocate_pinned({static_cast<std::int64_t>(words)}, DType::i32);
  std::shared_ptr<Event> copied;
  {
    Tensor t = cuda.allocate({static_cast<std::int64_t>(words)}, DType::i32);
    launch_slow_fill_u32(t.data(), words, 0xAAAA5555u, 200, CudaBackend::native_stream(*stream));
    t.set_ready_event(stream->record());
    copied = cuda.copy_to_host(t, pinned.data(), *stream);
  }
  Tensor reused = cuda.allocate({static_cast<std::int64_t>(words)}, DType::i32);
  auto other = cuda.create_stream();
  launch_slow_fill_u32(reused.data(), words, 0x0u, 0, CudaBackend::native_stream(*other));
  reused.set_ready_event(other->record());
  copied->synchronize(default_timeout());
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < words; ++i) wrong += pinned.data_as<std::uint32_t>()[i] != 0xAAAA5555u;
  CHECK(wrong == 0);
  reused.ready_event()->synchronize(default_timeout());
}

TEST_CASE("allocate_pinned gives host tensors from the staging pool that copy to and from the device") {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  CudaBackend cuda;
  auto stream = cuda.create_stream();
  Tensor pinned = cuda.allocate_pinned({256}, DType::f32);
  REQUIRE(pinned.device() == Device{DeviceType::cpu, 0});
  REQUIRE(pinned.data() != nullptr);
  CHECK(cuda.memory_stats().pinned_bytes >= pinned.nbytes());
  for (int i = 0; i < 256; ++i) pinned.data_as<float>()[i] = static_cast<float>(i) * 0.5f;
  Tensor device = cuda.allocate({256}, DType::f32);
  cuda.copy_from_host(pinned.data(), device, *stream);
  Tensor back = cuda.allocate_pinned({256}, DType::f32);
  cuda.copy_to_host(device, back.data(), *stream)->synchronize(default_timeout());
  CHECK(floats(back) == floats(pinned));
}

TEST_CASE("CudaMemoryHooks: the engine's allocator serves and takes back every device tensor") {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  std::atomic<int> allocations{0}, releases{0}, failed_frees{0};
  std::atomic<bool> refuse{false};
  CudaBackendOptions options;
  options.memory.allocate = [&](std::size_t bytes, void*) -> void* {
    if (refuse) return nullptr;
    ++allocations;
    return device_malloc(bytes);
  };
  options.memory.release = [&](void* ptr, std::size_t, void*) {
    ++releases;
    if (!device_free(ptr)) ++failed_frees;
  };
  {
    CudaBackend cuda(options);
    auto stream = cuda.create_stream();
    {
      Tensor t = device_iota(cuda, *stream, {1000}, 7.0f);
      CHECK(allocations.load() == 1);
      Tensor host = to_host(cuda, *stream, t, "hooked tensor");
      CHECK(floats(host) == iota_from(7.0f, 1000));
    }
    CHECK(releases.load() == allocations.load());
    CHECK(cuda.memory_stats().device_mallocs == 0);
    refuse = true;
    try {
      Tensor none = cuda.allocate({16}, DType::f32);
      FAIL("an allocation the hook refused gave a tensor");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::device);
    }
  }
  CHECK(releases.load() == allocations.load());
  CHECK(failed_frees.load() == 0);
}
