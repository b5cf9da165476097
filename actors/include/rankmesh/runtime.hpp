// Runtime: the embedded default — every rank of the world as an actor inside this process.
// Each rank is then driven by its own engine thread through its ParallelState.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "rankmesh/parallel_state.hpp"

namespace rankmesh {

class DeviceBackend;

// The default timeout of blocking calls, 30 s, multiplied by RANKMESH_TIMEOUT_SCALE when set
// (one knob for slow or sanitized CI machines).
std::chrono::milliseconds default_timeout();
// `base` times RANKMESH_TIMEOUT_SCALE.
std::chrono::milliseconds scaled_timeout(std::chrono::milliseconds base);

struct RuntimeOptions {
  int world_size = 1;
  int data_parallel_size = 1;  // dp of initialize_model_parallel comes from here, as in vLLM
  int ranks_per_node = 0;      // local_rank = rank % ranks_per_node; 0: all ranks on one node
  std::chrono::milliseconds timeout = default_timeout();
  // CAF worker threads; 0: one per core. Each rank adds one communication thread when it
  // first runs an asynchronous operation.
  int scheduler_threads = 0;
  // How long a waiting rank spins before it parks; at most one spinner per core.
  std::chrono::microseconds spin{50};
  // Fresh tensors for received data come from here; default: zeroed aligned host memory.
  std::function<Tensor(const Shape&, DType)> allocator;
  // Non-host devices whose tensors ranks may send or receive (the host is always known). Each
  // must outlive the runtime.
  std::vector<DeviceBackend*> backends;
  // Where ranks log (their assignment, once); default: stderr.
  std::function<void(const std::string&)> log;
};

class Runtime {
public:
  explicit Runtime(RuntimeOptions options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  int world_size() const noexcept;
  // The state of global rank `rank`; throws Error(invalid_argument) out of range.
  ParallelState& rank(int rank);
  // Fails every pending and later operation of every rank with `reason`.
  void abort(const std::string& reason);

  struct Impl;

private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace rankmesh
