// rankmesh-gpu-ranks: CUDA tensors between processes sharing one GPU (issue 14: CUDA IPC, or
// staging where IPC is unavailable). Run under `rankmesh launch --nproc-per-node 2`; each process
// hosts one rank.
//   --mode exchange (default): rank 0 sends device tensor dicts produced by a still-running
//     kernel, rank 1 answers with its own, three rounds (the same cached blocks come back, so
//     exported handles are reused); then all_reduce and all_gather of device tensors. Each rank
//     checks every result on the host and prints "rank R: ok". With RANKMESH_CUDA_IPC=1 the dicts
//     travel through CUDA IPC; each rank then checks that its exports were all released and
//     prints "rank R: CUDA IPC exports all released".
//   --mode dead-peer: one exchange, then rank 1 starts sending a 16 MiB device tensor whose
//     kernel still runs and leaves with _exit(0) at once, in the middle of the transfer. Rank 0's
//     receive (or the received tensor's ready event: receiving is stream-ordered) must fail with
//     Errc::peer_failed within its timeout; it prints "rank 0: the receive failed after S s with
//     peer failed: ..." and "rank 0: ok".
// What differs goes to stderr, with exit status 1; 77 when no CUDA device can be used.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "cuda_tensors.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/runtime.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace {

std::mutex g_print;

void say(const std::string& line) {
  std::lock_guard lock(g_print);
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

double since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

constexpr std::int64_t kRows = 256, kCols = 1024;  // 1 MiB of f32 per round

// One round: rank 0 -> rank 1 a dict produced by a kernel that still spins; rank 1 -> rank 0 its
// answer.
void exchange_round(CudaBackend& cuda, Stream& stream, GroupCoordinator& world, int round) {
  const float start = static_cast<float>(round * 10);
  if (world.rank() == 0) {
    Tensor x = device_iota(cuda, stream, {kRows, kCols}, start, round == 0 ? 200 : 20);
    world.send_tensor_dict(TensorDict{{"x", x}, {"round", round}}, 1);
    TensorDict answer = world.recv_tensor_dict(1);
    expect(answer.at("round") == Value(round), "round " + std::to_string(round) + ": the answer's round");
    Tensor y = to_host(cuda, stream, answer.at("y").as<Tensor>(), "round " + std::to_string(round) + ": y");
    expect(floats(y) == iota_from(2000.0f + start, 1000), "round " + std::to_string(round) + ": y's values");
  } else {
    TensorDict got = world.recv_tensor_dict(0);
    expect(got.at("round") == Value(round), "round " + std::to_string(round) + ": the round");
    Tensor x = to_host(cuda, stream, got.at("x").as<Tensor>(), "round " + std::to_string(round) + ": x");
    expect(x.shape() == Shape{kRows, kCols}, "round " + std::to_string(round) + ": x's shape");
    expect(floats(x) == iota_from(start, kRows * kCols), "round " + std::to_string(round) + ": x's values");
    world.send_tensor_dict(
        TensorDict{{"y", device_iota(cuda, stream, {1000}, 2000.0f + start, 20)}, {"round", round}}, 0);
  }
}

void collectives(CudaBackend& cuda, Stream& stream, GroupCoordinator& world) {
  const int r = world.rank();
  Tensor in = device_iota(cuda, stream, {4096}, static_cast<float>(r * 1000), 20);
  Tensor sum = to_host(cuda, stream, world.all_reduce(in), "all_reduce");
  std::vector<float> want(4096);
  for (int i = 0; i < 4096; ++i) want[static_cast<std::size_t>(i)] = static_cast<float>(1000 + 2 * i);
  expect(floats(sum) == want, "all_reduce: the sum");
  Tensor gathered = to_host(cuda, stream, world.all_gather(in, 0), "all_gather");
  std::vector<float> both = iota_from(0.0f, 4096);
  for (float v : iota_from(1000.0f, 4096)) both.push_back(v);
  expect(floats(gathered) == both, "all_gather: the concatenation");
}

void exchange(CudaBackend& cuda, Stream& stream, ParallelState& state) {
  for (int round = 0; round < 3; ++round) exchange_round(cuda, stream, state.world(), round);
  collectives(cuda, stream, state.world());
  state.world().barrier();
  const char* ipc = std::getenv("RANKMESH_CUDA_IPC");
  if (ipc == nullptr || std::strcmp(ipc, "1") != 0) return;
  // With CUDA IPC every exported copy is released once the peer's copy has completed; both peers
  // have read their results on the host by now, so the acknowledgements are on the device.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::size_t held = cuda.exports_held();
  while (held != 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    held = cuda.exports_held();
  }
  expect(held == 0, std::to_string(held) + " CUDA IPC exports still held after the peer's copies");
  say("rank " + std::to_string(state.world().rank()) + ": CUDA IPC exports all released");
}

// Returns normally on rank 0 only; rank 1 leaves the process in the middle of a send.
void dead_peer(CudaBackend& cuda, Stream& stream, ParallelState& state) {
  GroupCoordinator& world = state.world();
  exchange_round(cuda, stream, world, 0);  // the link, and IPC where it works, are up
  world.barrier();
  if (world.rank() == 1) {
    const std::size_t words = std::size_t{4} << 20;  // 16 MiB
    Tensor big = cuda.allocate({static_cast<std::int64_t>(words)}, DType::i32);
    launch_slow_fill_u32(big.data(), words, 0xDEADBEEFu, 200, CudaBackend::native_stream(stream));
    big.set_ready_event(stream.record());
    world.send_tensor_dict(TensorDict{{"big", big}}, 0);
    say("rank 1: leaving in the middle of the transfer");
    ::_exit(0);  // no destructors, no goodbye: as a crashed process
  }
  const auto start = std::chrono::steady_clock::now();
  std::string where = "the receive";
  try {
    TensorDict got = world.recv_tensor_dict(1);
    where = "the received tensor's ready event";
    to_host(cuda, stream, got.at("big").as<Tensor>(), "big");
  } catch (const Error& e) {
    say("rank 0: " + where + " failed after " + std::to_string(since(start)) + " s with " + to_string(e.code()) +
        ": " + e.what());
    expect(e.code() == Errc::peer_failed,
           where + " failed with " + std::string(to_string(e.code())) + ", not peer failed: " + e.what());
    return;
  }
  throw std::runtime_error("the transfer from the dead rank 1 succeeded");
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "exchange";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--mode") == 0 && i + 1 < argc) {
      mode = argv[++i];
    } else {
      mode = "";
      break;
    }
  }
  if (mode != "exchange" && mode != "dead-peer") {
    std::fprintf(stderr, "usage: rankmesh-gpu-ranks [--mode exchange|dead-peer] (under rankmesh launch, 2 processes)\n");
    return 2;
  }
  if (CudaBackend::device_count() == 0) {
    std::fprintf(stderr, "rankmesh-gpu-ranks: no CUDA device (%s)\n", CudaBackend::unavailable_reason().c_str());
    return 77;
  }
  int rank = -1;
  try {
    CudaBackend cuda;  // the context now, not on the first transfer
    RuntimeOptions options;  // the world comes from the launcher
    options.backends = {&cuda};
    // Short enough that a receive the dead peer leaves waiting ends, as a timeout, inside the
    // launcher's limit (launched_ranks_test.cpp): peer_failed must come well before.
    options.timeout = scaled_timeout(std::chrono::seconds(15));
    options.log = [](const std::string& line) {
      std::lock_guard lock(g_print);
      std::fprintf(stderr, "%s\n", line.c_str());
    };
    Runtime runtime(options);
    if (runtime.world_size() != 2 || runtime.local_ranks().size() != 1) {
      std::fprintf(stderr, "rankmesh-gpu-ranks: run under `rankmesh launch --nproc-per-node 2`\n");
      return 2;
    }
    rank = runtime.local_ranks().front();
    ParallelState& state = runtime.rank(rank);
    auto stream = cuda.create_stream();
    StreamGuard guard(*stream);
    if (mode == "exchange") {
      exchange(cuda, *stream, state);
    } else {
      dead_peer(cuda, *stream, state);
    }
    say("rank " + std::to_string(rank) + ": ok");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d failed: %s\n", rank, e.what());
    return 1;
  }
  return 0;
}
