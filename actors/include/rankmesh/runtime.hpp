// Runtime: a process's part of the world. Embedded (the default): every rank of the world as an
// actor inside this process. Under a launcher (`rankmesh launch`, torchrun-style variables, or
// mpirun/srun): this process hosts its one rank and joins the others through rank 0's
// registry. Each local rank is driven by its own engine thread through its ParallelState.
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
  // Embedded: the number of ranks in this process. Under a launcher the environment sets the
  // world; a world_size other than 1 must then agree with it.
  int world_size = 1;
  int data_parallel_size = 1;  // dp of initialize_model_parallel comes from here, as in vLLM
  int ranks_per_node = 0;      // local_rank = rank % ranks_per_node; 0: all ranks on one node
  std::chrono::milliseconds timeout = default_timeout();
  // CAF worker threads; 0: one per core. Each rank adds one stream thread (payload copies,
  // asynchronous operations) when it first needs one.
  int scheduler_threads = 0;
  // How long a waiting rank spins before it parks; at most one spinner per core (one per
  // process where processes outnumber cores). Spinning buys latency with CPU
  // (docs/bench/cpu.md); RANKMESH_SPIN_US overrides it.
  std::chrono::microseconds spin{50};
  // Fresh tensors for received data come from here; default: the process's pool of recycled
  // host blocks (huge pages for large ones), and in an embedded world, for blocks of up to
  // 64 KiB, a pool of each rank's own (at most 16 MiB cached each).
  Allocator allocator;
  // Non-host devices whose tensors ranks may send or receive (the host is always known). Each
  // must outlive the runtime.
  std::vector<DeviceBackend*> backends;
  // Where ranks log (their assignment, once; failures); default: stderr.
  std::function<void(const std::string&)> log;
  // Timeline traces (docs/trace.md): a directory turns recording on from the start; each rank
  // keeps its last `trace_events` operations. RANKMESH_TRACE=DIR and RANKMESH_TRACE_EVENTS=N
  // override them.
  std::string trace_dir;
  std::size_t trace_events = 16384;
  // A receive still waiting after this fraction of its operation's timeout logs one line naming
  // whom it waits for and who is behind (the watchdog); 0 turns it off. RANKMESH_WATCHDOG
  // overrides.
  double watchdog = 0.5;

  // --- across processes (ignored when embedded)
  // The data plane's listening address; default: this host's address toward MASTER_ADDR
  // (127.0.0.1 for a single node), never all interfaces unless asked for ("0.0.0.0").
  std::string listen_address;
  // "auto" (shm on one node, tcp across nodes), "shm" or "tcp"; RANKMESH_TRANSPORT overrides.
  // Honoured when embedded too: "shm" or "tcp" joins the ranks of this process through that
  // transport instead of inproc (tests, benchmarks).
  std::string transport = "auto";
  // How long rank 0's registry waits for every rank to join. RANKMESH_JOIN_TIMEOUT_MS overrides.
  std::chrono::milliseconds join_timeout = scaled_timeout(std::chrono::seconds(30));
  // A rank silent this long (dead, frozen) fails every rank's operations that involve it.
  // RANKMESH_FAILURE_TIMEOUT_MS overrides.
  std::chrono::milliseconds failure_timeout = scaled_timeout(std::chrono::seconds(2));
};

class Runtime {
public:
  explicit Runtime(RuntimeOptions options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  int world_size() const noexcept;
  // The ranks this process hosts (all of them when embedded).
  const std::vector<int>& local_ranks() const noexcept;
  // The nodes the world spans: world size over ranks per node (the launcher's local world
  // size, or RuntimeOptions::ranks_per_node when embedded), rounded up.
  int node_count() const noexcept;
  // The state of global rank `rank`; throws Error(invalid_argument) unless hosted here.
  ParallelState& rank(int rank);
  // Fails every pending and later operation of every rank with `reason`.
  void abort(const std::string& reason);

  struct Impl;

private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace rankmesh
