// rankmesh-scaling: one rank of a launched world, for bench/scaling.py. Prints one line
// "SCALING {json}" per rank: when main() began and when the runtime stood (start-up), its
// resident memory then and at the end, and on rank 0 the round trips to every other rank — the
// first one on a pair that has never talked, then the steady ones. No collective runs before
// the round trips, so every pair (0, k) meets for the first time in them.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "rankmesh/error.hpp"
#include "rankmesh/runtime.hpp"

using namespace rankmesh;

namespace {

long long now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// VmRSS of this process in KiB: its own pages plus the shared segments it has touched.
long long resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

std::string list(const std::vector<double>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    char number[32];
    std::snprintf(number, sizeof number, "%s%.1f", i ? "," : "", values[i]);
    out += number;
  }
  return out + "]";
}

}  // namespace

int main(int argc, char** argv) {
  const int steady = argc > 1 ? std::max(1, std::atoi(argv[1])) : 50;
  const long long started = now_us();
  try {
    Runtime runtime{RuntimeOptions{}};
    const long long ready = now_us();
    const long long resident_ready = resident_kib();
    const int rank = runtime.local_ranks().front();
    GroupCoordinator& world = runtime.rank(rank).world();
    const int size = world.world_size();
    Tensor payload = Tensor::empty({2}, DType::f32);
    payload.data_as<float>()[0] = static_cast<float>(rank);
    payload.data_as<float>()[1] = 0.5f;
    const TensorDict message{{"x", payload}};
    std::vector<double> first_us, steady_us;
    // Rank 0 lets the last ranks come up, so that a first round trip waits for no start-up.
    if (rank == 0) std::this_thread::sleep_for(std::chrono::milliseconds(200 + 10 * size));
    for (int peer = 1; peer < size; ++peer) {
      if (rank != 0 && rank != peer) continue;
      std::vector<double> trips;
      for (int trip = 0; trip <= steady; ++trip) {
        const auto begin = std::chrono::steady_clock::now();
        if (rank == 0) {
          world.send_tensor_dict(message, peer);
          const TensorDict back = world.recv_tensor_dict(peer);
          if (!(back == message)) throw Error(Errc::mismatch, "rank " + std::to_string(peer) + " sent back another dict");
        } else {
          world.send_tensor_dict(world.recv_tensor_dict(0), 0);
        }
        trips.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - begin).count());
      }
      if (rank != 0) break;
      first_us.push_back(trips.front());
      std::nth_element(trips.begin() + 1, trips.begin() + 1 + steady / 2, trips.end());
      steady_us.push_back(trips[1 + static_cast<std::size_t>(steady / 2)]);
    }
    world.barrier();
    std::printf("SCALING {\"rank\":%d,\"world\":%d,\"started_us\":%lld,\"ready_us\":%lld,"
                "\"rss_ready_kib\":%lld,\"rss_end_kib\":%lld,\"first_rtt_us\":%s,\"steady_rtt_us\":%s}\n",
                rank, size, started, ready, resident_ready, resident_kib(), list(first_us).c_str(),
                list(steady_us).c_str());
    std::fflush(stdout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rankmesh-scaling: %s\n", e.what());
    return 1;
  }
  return 0;
}
