// The buffer pool's bounds: what it caches stays under max_cached_bytes, and what sits unused
// goes back to the system after idle_release (buffer_pool.hpp).
#include <doctest/doctest.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "buffer_pool.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

namespace {

// This process's resident memory in bytes (/proc/self/statm's second field, in pages).
std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * 4096;
}

}  // namespace

TEST_CASE("buffer pool: after a burst of large receives and an idle period, the memory goes back to the system") {
  BufferPool pool(BufferPoolOptions{.idle_release = 100ms});
  constexpr std::size_t kBlock = std::size_t{8} << 20;
  constexpr int kBurst = 8;  // 64 MiB
  const std::size_t before = resident_bytes();
  {
    std::vector<Tensor> burst;
    for (int i = 0; i < kBurst; ++i) {
      burst.push_back(pool.allocate({static_cast<std::int64_t>(kBlock)}, DType::u8));
      std::memset(burst.back().data(), i, kBlock);  // received into: resident
    }
  }
  CHECK(pool.stats().cached_bytes == kBurst * kBlock);  // kept for the next burst
  CHECK(resident_bytes() >= before + kBurst * kBlock / 2);
  // Idle from 100 to 200 ms: taken out of the cache by the trimmer's second round at the latest,
  // and unmapped right after (the trimmer frees outside the pool's lock).
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  auto returned = [&] {
    return pool.stats().cached_bytes == 0 && resident_bytes() < before + kBurst * kBlock / 4;
  };
  while (!returned() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  CHECK(pool.stats().cached_bytes == 0);
  CHECK(pool.stats().released == kBurst);
  CHECK(resident_bytes() < before + kBurst * kBlock / 4);
}

TEST_CASE("buffer pool: a block in use stays; one reused within the idle period stays cached") {
  BufferPool pool(BufferPoolOptions{.idle_release = 200ms});
  Tensor held = pool.allocate({1 << 20}, DType::u8);
  for (int i = 0; i < 8; ++i) {  // 800 ms of steady traffic: the same block, reused
    pool.allocate({4 << 20}, DType::u8);
    std::this_thread::sleep_for(100ms);
  }
  CHECK(pool.stats().fresh == 2);   // `held`'s and the reused one's
  CHECK(pool.stats().released == 0);
  CHECK(pool.stats().in_use_bytes == std::size_t{1} << 20);
}

TEST_CASE("buffer pool: idle_release 0 keeps the cache until trim()") {
  BufferPool pool(BufferPoolOptions{.idle_release = 0ms});
  pool.allocate({4 << 20}, DType::u8);
  std::this_thread::sleep_for(50ms);
  CHECK(pool.stats().cached_bytes == 4u << 20);
  pool.trim();
  CHECK(pool.stats().cached_bytes == 0);
}

TEST_CASE("buffer pool: each size class reuses its own blocks, the last one cached first") {
  BufferPool pool(BufferPoolOptions{.idle_release = 0ms});
  // Heap classes (64 B, 128 B, 4 KiB, 1 MiB) and huge ones (2 MiB, 6 MiB): one list each.
  const std::vector<std::int64_t> sizes = {64, 65, 4096, 1 << 20, 2 << 20, 5 << 20};
  std::vector<void*> first;
  {
    std::vector<Tensor> held;
    for (std::int64_t size : sizes) {
      held.push_back(pool.allocate({size}, DType::u8));
      first.push_back(held.back().data());
    }
    CHECK(pool.stats().fresh == sizes.size());
  }
  std::size_t cached = 0;
  for (std::int64_t size : sizes) cached += BufferPool::block_size(static_cast<std::size_t>(size));
  CHECK(pool.stats().cached_bytes == cached);
  CHECK(pool.stats().in_use_bytes == 0);
  // The same sizes again, in reverse: every one is served by its own class's block.
  for (std::size_t i = sizes.size(); i-- > 0;) {
    const Tensor again = pool.allocate({sizes[i]}, DType::u8);
    CHECK(again.data() == first[i]);
  }
  CHECK(pool.stats().reused == sizes.size());
  CHECK(pool.stats().fresh == sizes.size());
  // Two blocks of one class: the one cached last comes back first (it is the warmest).
  Tensor a = pool.allocate({4096}, DType::u8);
  Tensor b = pool.allocate({4096}, DType::u8);
  void* b_data = b.data();
  a = Tensor();
  b = Tensor();
  CHECK(pool.allocate({4096}, DType::u8).data() == b_data);
  pool.trim();
  CHECK(pool.stats().cached_bytes == 0);
}

TEST_CASE("buffer pool: tensors handed out and dropped on many threads at once all come back") {
  BufferPool pool(BufferPoolOptions{.idle_release = 0ms});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&pool, t] {
      for (int i = 0; i < 2000; ++i) {
        Tensor x = pool.allocate({64 << (i % 4)}, DType::u8);
        std::memset(x.data(), t, x.nbytes());
        Tensor shared = x;  // dropped after x: the last holder gives the block back
      }
    });
  for (std::thread& thread : threads) thread.join();
  CHECK(pool.stats().in_use_bytes == 0);
  CHECK(pool.stats().fresh + pool.stats().reused == 8000);
  CHECK(pool.stats().fresh <= 16);  // at most one block per thread and class ever made
}

TEST_CASE("buffer pool: the trimmer runs on the process's cores, not on those of the thread that started it") {
  cpu_set_t process_cores;
  REQUIRE(sched_getaffinity(getpid(), sizeof process_cores, &process_cores) == 0);
  if (CPU_COUNT(&process_cores) < 2) {
    MESSAGE("skipped: one core, every thread is bound to it anyway");
    return;
  }
  int first = 0;
  while (!CPU_ISSET(first, &process_cores)) ++first;
  BufferPool pool(BufferPoolOptions{.idle_release = 1s});
  // A rank thread bound to one core (as rankmesh bench binds them) lets go of a block: the
  // release starts the trimmer from that thread.
  bool bound_ok = false;
  std::thread bound([&] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    bound_ok = pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0;
    Tensor block = pool.allocate({64}, DType::u8);
  });
  bound.join();
  REQUIRE(bound_ok);
  REQUIRE(pool.stats().cached_bytes > 0);
  // Every trimmer of this process (the process-wide pool may have one too) may use the cores
  // the main thread may.
  int trimmers = 0;
  for (auto until = std::chrono::steady_clock::now() + 5s;
       trimmers == 0 && std::chrono::steady_clock::now() < until;
       std::this_thread::sleep_for(1ms)) {
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      std::getline(comm, name);
      if (name != "rankmesh-trim") continue;
      cpu_set_t cores;
      const pid_t tid = static_cast<pid_t>(std::stoi(task.path().filename().string()));
      if (sched_getaffinity(tid, sizeof cores, &cores) != 0) continue;  // ended meanwhile
      CHECK(CPU_EQUAL(&cores, &process_cores));
      ++trimmers;
    }
  }
  CHECK(trimmers > 0);
}

TEST_CASE("buffer pool: a pool with a larger one keeps small blocks itself and takes large ones there") {
  BufferPool larger(BufferPoolOptions{.idle_release = 0ms});
  BufferPool own(BufferPoolOptions{.idle_release = 0ms}, 4096, larger);
  {
    const Allocator allocate = own.allocator();  // as the runtime draws from it
    const Tensor small = allocate(Shape{1024}, DType::u8);  // 1 KiB: its own
    const Tensor edge = allocate(Shape{1024}, DType::f32);  // 4 KiB: still its own
    const Tensor large = allocate(Shape{4097}, DType::u8);  // beyond: the larger pool's
    CHECK(own.stats().in_use_bytes == 1024 + 4096);
    CHECK(larger.stats().in_use_bytes == 8192);
  }
  CHECK(own.stats().in_use_bytes == 0);
  CHECK(own.stats().cached_bytes == 1024 + 4096);  // each block back in the pool it came from
  CHECK(larger.stats().in_use_bytes == 0);
  CHECK(larger.stats().cached_bytes == 8192);
  own.trim();
  larger.trim();
}
