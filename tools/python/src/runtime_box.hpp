// RuntimeBox: a Runtime shared by the Python objects that reach into it (states, groups), so
// that none of them can outlive it: every call holds a Use, close() waits for the calls in
// flight (after failing them) before destroying the Runtime, and a runtime inherited through
// fork() refuses to be used (its threads did not come along). It owns the runtime's device
// backends (Devices), which outlive the Runtime.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "devices.hpp"
#include "rankmesh/runtime.hpp"

namespace rankmesh::python {

class RuntimeBox {
public:
  // Starts the runtime with `devices`' backends; call without the GIL (joining a launched world
  // takes a while).
  RuntimeBox(RuntimeOptions options, std::shared_ptr<Devices> devices);
  ~RuntimeBox();
  RuntimeBox(const RuntimeBox&) = delete;
  RuntimeBox& operator=(const RuntimeBox&) = delete;

  // A call in flight; throws Error when the runtime is closed or was inherited through fork().
  class Use {
  public:
    explicit Use(RuntimeBox& box);
    ~Use();
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    Runtime& runtime() const noexcept { return *box_.runtime_; }

  private:
    RuntimeBox& box_;
  };

  // Fails the calls in flight, waits for them to return, destroys the runtime; idempotent.
  // Call without the GIL: the runtime's threads release tensors whose owners need it.
  void close();
  bool closed() const noexcept { return closing_.load(); }

  // The runtime's devices (never null; without backends for a host-only runtime). Tensors
  // lent to Python keep them alive, as they may be consumed after close().
  const std::shared_ptr<Devices>& devices() const noexcept { return devices_; }

  // Groups a Python object got before destroy_model_parallel refuse to be used after it: each
  // initialize and destroy of a rank's model parallel state starts a new epoch.
  std::uint64_t epoch(int rank) const noexcept;
  void advance_epoch(int rank) noexcept;

private:
  std::shared_ptr<Devices> devices_;  // before runtime_: destroyed after it
  std::unique_ptr<Runtime> runtime_;
  std::vector<int> local_ranks_;
  std::vector<std::atomic<std::uint64_t>> epochs_;  // by index in local_ranks_
  std::atomic<int> users_{0};
  std::atomic<bool> closing_{false};
  const std::uint64_t process_generation_;
};

// Counts fork()s: a child sees a generation its parent's runtimes do not have.
void watch_forks();

}  // namespace rankmesh::python
