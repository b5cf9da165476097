// rankmesh-steady-world: one rank of a launched world that all_reduces one float per step until
// rank 0 finds STOP_FILE, then every rank stops after the same step and exits 0. Prints
// "rank R: step N" about every 50 ms, so a test can see the world make progress (a deadlocked
// world prints nothing new), and "rank R: stopped after N steps" at the end.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "rankmesh/error.hpp"
#include "rankmesh/runtime.hpp"

using namespace rankmesh;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: rankmesh-steady-world STOP_FILE\n");
    return 2;
  }
  try {
    Runtime runtime{RuntimeOptions{}};
    const int rank = runtime.local_ranks().front();
    ParallelState& state = runtime.rank(rank);
    std::printf("rank %d: pid %d, registry at %s:%s\n", rank, static_cast<int>(getpid()),
                std::getenv("MASTER_ADDR"), std::getenv("MASTER_PORT"));
    std::fflush(stdout);
    Tensor stop = Tensor::empty({1}, DType::f32);
    long long steps = 0;
    auto printed = std::chrono::steady_clock::now();
    while (true) {
      stop.data_as<float>()[0] = rank == 0 && access(argv[1], F_OK) == 0 ? 1.0f : 0.0f;
      const Tensor any_stop = state.world().all_reduce(stop);
      ++steps;
      if (any_stop.data_as<float>()[0] > 0) break;
      if (std::chrono::steady_clock::now() - printed > std::chrono::milliseconds(50)) {
        std::printf("rank %d: step %lld\n", rank, steps);
        std::fflush(stdout);
        printed = std::chrono::steady_clock::now();
      }
    }
    std::printf("rank %d: stopped after %lld steps\n", rank, steps);
    std::fflush(stdout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rankmesh-steady-world: %s\n", e.what());
    return 1;
  }
  return 0;
}
