// Events of a CUDA stream: not complete while the kernel before them runs, completion callbacks
// on another thread once it has finished; and a host user event holding a CUDA stream's later
// work back until someone completes it.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "gpu_support.hpp"

using namespace rankmesh;
using namespace rankmesh::test;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kWords = 4096;
constexpr std::uint32_t kPattern = 0x5EED0001u;

bool all_are(const Tensor& host, std::uint32_t value) {
  for (std::int64_t i = 0; i < host.numel(); ++i)
    if (host.data_as<std::uint32_t>()[i] != value) return false;
  return true;
}

}  // namespace

TEST_CASE("a CUDA event stays incomplete while its slow kernel runs, and its callback runs on another thread after it") {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  CudaBackend cuda;
  auto stream = cuda.create_stream();
  Tensor t = cuda.allocate({static_cast<std::int64_t>(kWords)}, DType::i32);
  Tensor pinned = cuda.allocate_pinned(t.shape(), DType::i32);
  launch_slow_fill_u32(t.data(), kWords, kPattern, 200, CudaBackend::native_stream(*stream));
  // The callback may read host memory only: the kernel's bytes, copied back before the event.
  cuda.copy_to_host(t, pinned.data(), *stream);
  auto event = stream->record();
  CHECK_FALSE(event->query());
  CHECK_FALSE(stream->query());

  auto called = Event::user();  // completed by the callback: the test waits on it with a timeout
  std::atomic<bool> saw_pattern{false};
  std::thread::id callback_thread;
  event->on_complete([&] {
    callback_thread = std::this_thread::get_id();
    saw_pattern = all_are(pinned, kPattern);
    called->complete();
  });
  called->synchronize(default_timeout());
  CHECK(event->query());
  CHECK(event->error() == nullptr);
  CHECK(callback_thread != std::this_thread::get_id());
  CHECK(saw_pattern.load());
  event->synchronize(default_timeout());  // complete: returns at once
  stream->synchronize(default_timeout());
}

TEST_CASE("a CUDA stream that waits on a host user event holds its later GPU work back until complete()") {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  CudaBackend cuda;
  auto stream = cuda.create_stream();
  Tensor t = cuda.allocate({static_cast<std::int64_t>(kWords)}, DType::i32);
  Tensor pinned = cuda.allocate_pinned(t.shape(), DType::i32);
  for (std::int64_t i = 0; i < pinned.numel(); ++i) pinned.data_as<std::uint32_t>()[i] = 0;

  auto gate = Event::user();
  stream->wait(*gate);
  // Own GPU work behind a host event is issued as the stream's work: a kernel launched straight
  // onto the CUDA stream now would run now (CUDA knows nothing of host events).
  void* native = CudaBackend::native_stream(*stream);
  stream->enqueue([t, native] { launch_slow_fill_u32(t.data(), kWords, kPattern, 0, native); });
  t.set_ready_event(stream->record());
  auto copied = cuda.copy_to_host(t, pinned.data(), *stream);
  // Held back: neither the kernel nor the copy may run, however long we give them.
  CHECK_FALSE(copied->wait_for(300ms));
  CHECK_FALSE(t.ready_event()->query());
  CHECK(all_are(pinned, 0));
  gate->complete();
  copied->synchronize(default_timeout());
  CHECK(all_are(pinned, kPattern));
}

TEST_CASE("a failed user event fails the events a CUDA stream records behind it") {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  CudaBackend cuda;
  auto stream = cuda.create_stream();
  auto gate = Event::user();
  stream->wait(*gate);
  auto behind = stream->record();
  gate->fail(std::make_exception_ptr(std::runtime_error("producer gave up")));
  CHECK_THROWS_WITH(behind->synchronize(default_timeout()), doctest::Contains("producer gave up"));
  CHECK(stream->error() != nullptr);
}
