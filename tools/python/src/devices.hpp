// Devices: the device backends one Python Runtime owns — none, or the CUDA backends its ranks
// use (Runtime(device="cuda")) — and DLPack's stream protocol for their tensors. A producer that
// hands rankmesh a CUDA tensor is asked to order its work before the rank's current stream; a
// consumer that takes one from rankmesh has its stream wait on the tensor's ready event. Neither
// direction synchronizes a device.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rankmesh/runtime.hpp"
#include "rankmesh/tensor.hpp"

namespace rankmesh::python {

class Devices {
public:
  // `device`: "" or "cpu": host tensors only. "cuda": each local rank's cuda:(local_rank %
  // device_count) — the launcher's local rank, or an embedded rank's rank % ranks_per_node —
  // as vLLM picks cuda:local_rank. "cuda:N": that device for every local rank. Creates the
  // devices' contexts now (call without the GIL). Error(device) naming the reason when this
  // build has no CUDA backend or no device can be used; Error(invalid_argument) for another
  // spelling.
  Devices(const std::string& device, const RuntimeOptions& options);
  ~Devices();
  Devices(const Devices&) = delete;
  Devices& operator=(const Devices&) = delete;

  // For RuntimeOptions::backends; they live as long as this object.
  std::vector<DeviceBackend*> backends() const;

  // Import. The stream a producer of a cuda:`index` tensor must order its work before, as
  // DLPack's integer: the calling thread's current stream on that device. Error(invalid_argument)
  // naming `what` when this runtime has no backend for cuda:`index`.
  std::intptr_t producer_stream(int index, const char* what) const;
  // The ready event of a tensor imported on cuda:`index`: recorded on the calling thread's
  // current stream there, after the producer made that stream wait for its work, so that
  // rankmesh's other streams (transports, copies) order themselves behind the producer too.
  std::shared_ptr<Event> imported_ready_event(int index) const;

  // Export. Makes a consumer's stream (DLPack's integer; nullopt for None) wait until `tensor`,
  // a tensor of one of these devices, is ready: on the device (cudaStreamWaitEvent) for a stream
  // the consumer names (> 2) when the tensor's event has a device event behind it; on the host,
  // for at most the runtime's timeout, for None (the legacy default stream), 1 (legacy), 2 (per
  // thread) — which name the calling thread's current device's streams, which rankmesh cannot see
  // — and for events completed by the host only. -1: the consumer asked for no synchronization.
  // Call without the GIL. Throws the event's error, Error(timeout), Error(invalid_argument)
  // for 0 or below -1 (DLPack disallows them).
  void order_consumer(const Tensor& tensor, std::optional<std::intptr_t> stream);
  // Export, when the consumer drops a tensor it took with `stream`: its memory goes back to
  // rankmesh only once the work queued on that stream by now has run (an event recorded there
  // completes), as rankmesh's allocator reuses a block at once on its own streams while the
  // consumer's kernels reading it may still be queued. For None, -1, 1 and 2 the event goes on
  // the legacy default stream, which waits for every blocking stream (torch's default stream
  // among them) of the calling thread's current device. Where no event can be recorded (a
  // capture in progress, a failed device) the memory goes back at once.
  void release_after_consumer(Tensor tensor, std::optional<std::intptr_t> stream) noexcept;

private:
  struct Cuda;  // the CUDA backends and the consumers' streams they wrap (devices.cpp)
  std::unique_ptr<Cuda> cuda_;
  std::chrono::nanoseconds timeout_;
};

}  // namespace rankmesh::python
