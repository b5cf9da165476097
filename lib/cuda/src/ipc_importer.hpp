// IpcImporter: other processes' CUDA memory and events opened in this one (CUDA IPC), kept open
// for the next message (cudaIpcOpenMemHandle costs ~0.16 ms: not per message).
//
// Mappings are cached by the exporter's pid and the handle itself, not by address: a handle
// names one allocation, and an address the exporter frees may come back as another allocation
// with another handle. They are closed when the exporting process is found gone (checked at
// each new open) and when the backend is torn down.
#pragma once

#include <cuda_runtime_api.h>

#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "ipc_descriptor.hpp"
#include "rankmesh/tensor.hpp"

namespace rankmesh::cuda {

class CudaStream;
class PinnedPool;

class IpcImporter {
public:
  explicit IpcImporter(int device) : device_(device) {}
  // Waits for this device's work (copies may still read the mappings), then closes them all.
  ~IpcImporter();
  IpcImporter(const IpcImporter&) = delete;
  IpcImporter& operator=(const IpcImporter&) = delete;

  // Enqueues on `stream`: wait for the exporter's event, copy the exported bytes into `dst`
  // (nbytes of them, checked by the caller), then write the acknowledgement from `ack` (a
  // page-locked u32 tensor, which the caller has filled with the generation). Error(peer_failed)
  // for an export past its time, Error(device) where CUDA refuses.
  void import_into(const IpcDescriptor& d, const Tensor& dst, const Tensor& ack, CudaStream& stream);

private:
  template <class Handle>
  struct Key {
    int pid;
    Handle handle;
    bool operator<(const Key& other) const {
      if (pid != other.pid) return pid < other.pid;
      return std::memcmp(&handle, &other.handle, sizeof handle) < 0;
    }
  };

  void* open_memory_locked(int pid, const cudaIpcMemHandle_t& handle);
  cudaEvent_t open_event_locked(int pid, const cudaIpcEventHandle_t& handle);
  void forget_gone_locked(int pid);

  const int device_;
  std::mutex mutex_;
  std::map<Key<cudaIpcMemHandle_t>, void*> memory_;
  std::map<Key<cudaIpcEventHandle_t>, cudaEvent_t> events_;
};

}  // namespace rankmesh::cuda
