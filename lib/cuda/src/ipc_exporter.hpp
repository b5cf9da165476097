// IpcExporter: a CudaBackend's tensors offered to other processes of this node (CUDA IPC),
// each held until its importer says its copy has completed.
//
// An importer cannot reply through the message it received, so the acknowledgement travels on
// the device: every export gets a slot of a small array of this backend's (exported once) and a
// generation number; the importer's stream writes the generation into the slot after its copy.
// The exporter reads the array back without waiting: an asynchronous copy into page-locked
// memory on a stream of its own, whose result the next export or import looks at (and then
// starts the next read). An export whose importer never writes (it died, it never received) is dropped once its
// hold has passed.
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "ipc_descriptor.hpp"
#include "rankmesh/tensor.hpp"

namespace rankmesh::cuda {

class CudaStream;

class IpcExporter {
public:
  explicit IpcExporter(int device) : device_(device) {}
  // Drops every held copy (importers still copying are the engine's to have finished before it
  // tears the backend down) and frees the array, the events and the polling stream.
  ~IpcExporter();
  IpcExporter(const IpcExporter&) = delete;
  IpcExporter& operator=(const IpcExporter&) = delete;

  // Exports `t` (its bytes final once the work issued on `stream` so far has run), held until
  // its importer's copy has completed or, at most, twice the span up to `accept_until`.
  // Error(device) where CUDA refuses, or when kSlots exports are held already.
  IpcDescriptor export_tensor(const Tensor& t, CudaStream& stream,
                              std::chrono::steady_clock::time_point accept_until);
  // Releases what the last read-back shows copied (and what is past its hold) and starts the
  // next read-back; never waits. Exports call it, and so do imports, so that a rank that has
  // stopped sending still lets go of what it sent.
  void reclaim();
  // Exports still held (their importers' copies not yet seen to have completed), after reclaim().
  std::size_t held();

  static constexpr std::uint32_t kSlots = 4096;

private:
  struct Held {
    Tensor tensor;
    cudaEvent_t ready = nullptr;  // interprocess; re-recorded only once this export is released
    cudaIpcEventHandle_t ready_handle{};
    std::uint32_t generation = 0;
    std::chrono::steady_clock::time_point until;
  };
  struct Event {
    cudaEvent_t event = nullptr;
    cudaIpcEventHandle_t handle{};
  };

  void set_up_locked();
  void reclaim_locked();
  void release_locked(std::uint32_t slot);
  Event take_event_locked();

  const int device_;
  std::mutex mutex_;
  bool set_up_ = false;
  void* acks_ = nullptr;             // device: std::uint32_t[kSlots]
  cudaIpcMemHandle_t acks_handle_{};
  std::uint32_t* mirror_ = nullptr;  // page-locked host: the array as last read back
  cudaStream_t poll_stream_ = nullptr;
  cudaEvent_t polled_ = nullptr;
  bool polling_ = false;  // a read-back is in flight
  std::vector<std::optional<Held>> slots_;
  std::vector<Event> free_events_;
  std::uint32_t generation_ = 0;
  std::uint32_t next_slot_ = 0;
  std::size_t held_ = 0;
};

}  // namespace rankmesh::cuda
