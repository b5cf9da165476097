// rankmesh-instructions N [TRANSPORT [PATTERN]]: the small-dict round trip of `rankmesh bench`
// (a), N times, in an embedded runtime of 2 ranks whose waits park at once (spin 0), so that
// callgrind counts work, not spinning; its channels inproc (issue 12's figure), or shm or tcp
// between the two threads. scripts/instructions.sh runs it under callgrind for two values of N:
// the difference of the totals over the difference of N is the cost of one round trip, free of
// the runtime's start and end. PATTERN p2p: instead, the iteration of `rankmesh bench` (f) at
// its smallest size — a dict of one 8-byte tensor one way, an object back.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "rankmesh/rankmesh.hpp"

namespace {

rankmesh::Tensor filled(std::int64_t bytes, float seed) {
  rankmesh::Tensor t = rankmesh::Tensor::empty(rankmesh::Shape{bytes / 4}, rankmesh::DType::f32);
  float* p = t.data_as<float>();
  for (std::int64_t i = 0; i < bytes / 4; ++i) p[i] = seed + static_cast<float>(i % 1021);
  return t;
}

// Rank 0 sends the benchmark's small dict, rank 1 sends the received dict back, rank 0 compares
// it with what it sent (issue 12's figure). True when every dict came back equal.
bool dict_round_trips(rankmesh::Runtime& runtime, int iterations) {
  std::thread echo([&] {
    rankmesh::ParallelState& state = runtime.rank(1);
    state.initialize_model_parallel(1);
    for (int i = 0; i < iterations; ++i) {
      rankmesh::TensorDict got = state.world().recv_tensor_dict(0);
      state.world().send_tensor_dict(std::move(got), 0);
    }
  });
  rankmesh::ParallelState& state = runtime.rank(0);
  state.initialize_model_parallel(1);
  rankmesh::TensorDict dict{{"input_ids", filled(256, 1)},     {"positions", filled(256, 2)},
                            {"hidden_states", filled(256, 3)}, {"residual", filled(256, 4)},
                            {"step", 0},                       {"temperature", 0.7}};
  bool same = true;
  for (int i = 0; i < iterations; ++i) {
    dict.set("step", i);
    state.world().send_tensor_dict(dict, 1);
    same = same && state.world().recv_tensor_dict(1) == dict;
  }
  echo.join();
  return same;
}

// The bench's (f) at 8 bytes: rank 0 sends a dict of one 8-byte tensor, rank 1 acknowledges it
// with an object. True when every acknowledgement came back right.
bool p2p_iterations(rankmesh::Runtime& runtime, int iterations) {
  std::thread echo([&] {
    rankmesh::ParallelState& state = runtime.rank(1);
    state.initialize_model_parallel(1);
    for (int i = 0; i < iterations; ++i) {
      rankmesh::TensorDict got = state.world().recv_tensor_dict(0);
      state.world().send_object(rankmesh::Value(i), 0);
    }
  });
  rankmesh::ParallelState& state = runtime.rank(0);
  state.initialize_model_parallel(1);
  const rankmesh::TensorDict dict{{"hidden_states", filled(8, 5)}};
  bool same = true;
  for (int i = 0; i < iterations; ++i) {
    state.world().send_tensor_dict(dict, 1);
    same = same && state.world().recv_object(1) == rankmesh::Value(i);
  }
  echo.join();
  return same;
}

}  // namespace

int main(int argc, char** argv) {
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 0;
  const std::string transport = argc >= 3 ? argv[2] : "inproc";
  const std::string pattern = argc == 4 ? argv[3] : "dict";
  if (argc < 2 || argc > 4 || iterations <= 0 || std::to_string(iterations) != argv[1] ||
      (transport != "inproc" && transport != "shm" && transport != "tcp") ||
      (pattern != "dict" && pattern != "p2p")) {
    std::fprintf(stderr,
                 "usage: rankmesh-instructions ITERATIONS [TRANSPORT [PATTERN]]\n"
                 "  ITERATIONS: a whole number > 0; TRANSPORT: inproc (the default), shm or tcp;\n"
                 "  PATTERN: dict (the default: the small-dict round trip) or p2p (an 8-byte\n"
                 "  tensor's dict one way, an object back)\n");
    return 2;
  }
  rankmesh::RuntimeOptions options;
  options.world_size = 2;
  options.spin = std::chrono::microseconds(0);
  if (argc >= 3) options.transport = transport;  // else the embedded default, inproc
  rankmesh::Runtime runtime(options);
  const bool same = pattern == "p2p" ? p2p_iterations(runtime, iterations)
                                     : dict_round_trips(runtime, iterations);
  if (!same) {
    std::fprintf(stderr, "rankmesh-instructions: a %s came back different\n",
                 pattern == "p2p" ? "acknowledgement" : "dict");
    return 1;
  }
  return 0;
}
