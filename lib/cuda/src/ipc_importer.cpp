#include "ipc_importer.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <set>

#include "cuda_check.hpp"
#include "cuda_stream.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh::cuda {
namespace {

bool gone(int pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

}  // namespace

IpcImporter::~IpcImporter() {
  if (memory_.empty() && events_.empty()) return;
  DeviceScope scope(device_);
  (void)cudaDeviceSynchronize();  // teardown only: no copy may read a mapping we close
  for (const auto& [key, base] : memory_) (void)cudaIpcCloseMemHandle(base);
  for (const auto& [key, event] : events_) (void)cudaEventDestroy(event);
}

// Closes the mappings of exporters that have exited, before anything new is opened, so that a
// dead peer's memory does not stay mapped for the rest of this process's life. A pid reused by
// another process only keeps stale mappings a while longer; they are never used again, since a
// new exporter's handles differ.
void IpcImporter::forget_gone_locked(int pid) {
  std::set<int> checked{pid};  // the exporter at hand is alive: it just sent to us
  for (auto it = memory_.begin(); it != memory_.end();) {
    const int owner = it->first.pid;
    if (checked.count(owner) == 0 && gone(owner)) {
      (void)cudaIpcCloseMemHandle(it->second);
      it = memory_.erase(it);
    } else {
      checked.insert(owner);
      ++it;
    }
  }
  for (auto it = events_.begin(); it != events_.end();) {
    if (checked.count(it->first.pid) == 0 && gone(it->first.pid)) {
      (void)cudaEventDestroy(it->second);
      it = events_.erase(it);
    } else {
      ++it;
    }
  }
}

void* IpcImporter::open_memory_locked(int pid, const cudaIpcMemHandle_t& handle) {
  const Key<cudaIpcMemHandle_t> key{pid, handle};
  if (auto it = memory_.find(key); it != memory_.end()) return it->second;
  forget_gone_locked(pid);
  void* base = nullptr;
  check(cudaIpcOpenMemHandle(&base, handle, cudaIpcMemLazyEnablePeerAccess),
        "cudaIpcOpenMemHandle", device_);
  memory_.emplace(key, base);
  return base;
}

cudaEvent_t IpcImporter::open_event_locked(int pid, const cudaIpcEventHandle_t& handle) {
  const Key<cudaIpcEventHandle_t> key{pid, handle};
  if (auto it = events_.find(key); it != events_.end()) return it->second;
  cudaEvent_t event = nullptr;
  check(cudaIpcOpenEventHandle(&event, handle), "cudaIpcOpenEventHandle", device_);
  events_.emplace(key, event);
  return event;
}

void IpcImporter::import_into(const IpcDescriptor& d, const Tensor& dst, const Tensor& ack,
                              CudaStream& stream) {
  const auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::steady_clock::now().time_since_epoch())
                       .count();
  if (now >= d.accept_until_ns)
    throw Error(Errc::peer_failed, "CUDA IPC: the export of process " + std::to_string(d.pid) +
                                       " is past its time (its exporter stops holding it)");
  const std::byte* src = nullptr;
  std::byte* ack_slot = nullptr;
  cudaEvent_t ready = nullptr;
  std::lock_guard lock(mutex_);
  DeviceScope scope(device_);
  if (d.pid == static_cast<std::int32_t>(::getpid())) {
    // CUDA opens no handle of its own process (embedded ranks): the exporter's addresses and
    // event are valid here as they are.
    src = reinterpret_cast<const std::byte*>(d.address);
    ack_slot = reinterpret_cast<std::byte*>(d.acks_address);
    ready = reinterpret_cast<cudaEvent_t>(d.ready_address);
  } else {
    try {
      src = static_cast<const std::byte*>(open_memory_locked(d.pid, d.memory)) + d.offset;
      ack_slot = static_cast<std::byte*>(open_memory_locked(d.pid, d.acks));
      ready = open_event_locked(d.pid, d.ready);
    } catch (const Error& error) {
      // A handle of a process that has exited does not open: that is the peer's failure.
      if (gone(d.pid))
        throw Error(Errc::peer_failed, "CUDA IPC: process " + std::to_string(d.pid) +
                                           " exited before its export was opened (" +
                                           error.what() + ")");
      throw;
    }
  }
  ack_slot += std::size_t{d.slot} * sizeof(std::uint32_t);
  const std::size_t bytes = d.nbytes;
  const int device = device_;
  stream.issue(
      [=, to = dst.data(), from_ack = ack.data()](cudaStream_t s) {
        check(cudaStreamWaitEvent(s, ready, 0), "cudaStreamWaitEvent (interprocess)", device);
        check(cudaMemcpyAsync(to, src, bytes, cudaMemcpyDeviceToDevice, s),
              "cudaMemcpyAsync (from another process)", device);
        check(cudaMemcpyAsync(ack_slot, from_ack, sizeof(std::uint32_t), cudaMemcpyHostToDevice, s),
              "cudaMemcpyAsync (IPC acknowledgement)", device);
      },
      dst, ack);
}

}  // namespace rankmesh::cuda
