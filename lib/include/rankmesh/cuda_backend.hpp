// CudaBackend: a CUDA GPU as a DeviceBackend — device memory from a caching allocator, streams
// that are CUDA streams, events that are CUDA events, copies that are cudaMemcpyAsync.
//
// Built only where CMake finds a CUDA toolkit (RANKMESH_CUDA=AUTO|ON|OFF) into the library
// rankmesh_cuda (target rankmesh::cuda); this header names no CUDA type, so an engine includes
// it without the toolkit's headers. The CUDA runtime is linked statically: only the driver
// (libcuda.so.1) is needed where it runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "rankmesh/device_backend.hpp"

namespace rankmesh {

namespace cuda {
class IpcExporter;
class IpcImporter;
}  // namespace cuda

// Where a CudaBackend's tensors get their device memory. Both calls run on the thread that
// allocates or drops a tensor; `stream` is the cudaStream_t (as void*) the memory will first
// be used on. An engine hands its own allocator here (torch's caching allocator), so that
// rankmesh's tensors and the engine's share one pool.
struct CudaMemoryHooks {
  std::function<void*(std::size_t bytes, void* stream)> allocate;  // null: out of memory
  std::function<void(void* ptr, std::size_t bytes, void* stream)> release;
};

struct CudaBackendOptions {
  int device = 0;  // the CUDA device index: cuda:<device>
  // Default (both null): the backend's caching allocator, which keeps freed blocks for reuse
  // (steady-state steps do not call cudaMalloc) and frees its cache when cudaMalloc fails.
  CudaMemoryHooks memory;
  // Cached-but-free device bytes beyond this are returned to the driver.
  std::size_t cache_limit_bytes = std::size_t{4} << 30;
  // Pinned host memory kept for staging (copies to and from hosts, the network, collectives);
  // grown in chunks on first use: cudaMallocHost is far too slow for a send path.
  std::size_t pinned_limit_bytes = std::size_t{1} << 30;
};

class CudaBackend final : public DeviceBackend {
public:
  // Number of CUDA devices this process can use; 0 without a GPU or driver (never throws).
  static int device_count() noexcept;
  // Why no device can be used ("no CUDA-capable device is detected", "driver too old"), or ""
  // when device_count() > 0.
  static std::string unavailable_reason();

  // Creates the device's context now (it costs 0.1–0.3 s on first use: better at start-up than
  // on the first transfer). Error(device) when the device cannot be used.
  explicit CudaBackend(CudaBackendOptions options = {});
  ~CudaBackend() override;

  Device device() const noexcept override;
  // Device memory, ready now (allocation is ordered on no stream); contents unspecified.
  Tensor allocate(Shape shape, DType dtype) override;
  // A new non-blocking CUDA stream.
  std::shared_ptr<Stream> create_stream() override;
  // This backend's non-blocking stream for threads that set none (not CUDA's legacy stream).
  Stream& default_stream() override;

  // Wraps a stream the caller owns (torch.cuda.current_stream().cuda_stream), which must outlive
  // the returned Stream; rankmesh never destroys it.
  std::shared_ptr<Stream> wrap_stream(void* cuda_stream);
  // The cudaStream_t of one of this backend's streams; Error(invalid_argument) otherwise.
  static void* native_stream(const Stream& stream);

  // Pinned (page-locked) host memory from the staging pool: a host tensor (cpu:0) whose copies
  // to and from the device run at full PCIe speed. Memory returns to the pool when the tensor
  // goes away. Beyond the pool's limit: ordinary (pageable) host memory.
  Tensor allocate_pinned(Shape shape, DType dtype);
  // Staging memory: allocate_pinned.
  Tensor allocate_host(Shape shape, DType dtype) override { return allocate_pinned(shape, dtype); }

  struct MemoryStats {
    std::uint64_t device_mallocs = 0;  // cudaMalloc calls so far (0 with hooks)
    std::uint64_t device_frees = 0;    // cudaFree calls so far
    std::size_t device_in_use = 0;     // bytes held by live tensors
    std::size_t device_cached = 0;     // bytes kept free for reuse
    std::size_t pinned_bytes = 0;      // pinned host bytes the pool holds
  };
  MemoryStats memory_stats() const;
  // Returns the cached free device blocks to the driver.
  void empty_cache();

  // CUDA IPC with other processes of this node: the tensor's base allocation's handle, its
  // offset and an interprocess event recorded on `stream`; the importer's stream waits on the
  // event, copies device-to-device and then acknowledges on the device (ipc_exporter.hpp), after
  // which the exporter drops its hold. Handles are opened once per exporter and allocation.
  std::vector<std::uint8_t> export_to_peer(const Tensor& t, Stream& stream,
                                           std::chrono::steady_clock::time_point hold_until) override;
  Tensor import_from_peer(std::span<const std::uint8_t> descriptor, Shape shape, DType dtype,
                          Stream& stream) override;
  // Exports still held, waiting for their importers' copies (for tests: none stay for ever).
  std::size_t exports_held();

  class Impl;  // private, in lib/cuda/src

protected:
  void enqueue_copy_to_host(const Tensor& src, std::size_t src_offset, void* host_dst,
                            std::size_t bytes, Stream& stream) override;
  void enqueue_copy_from_host(const void* host_src, std::size_t bytes, const Tensor& dst,
                              std::size_t dst_offset, Stream& stream) override;
  void enqueue_copy(const Tensor& src, std::size_t src_offset, const Tensor& dst,
                    std::size_t dst_offset, std::size_t bytes, Stream& stream) override;

private:
  std::shared_ptr<Impl> impl_;  // shared with tensors' deleters, which may outlive the backend
  std::shared_ptr<Stream> default_stream_;
  // The backend's own, not Impl's: held exports hold tensors, whose deleters hold Impl.
  std::unique_ptr<cuda::IpcExporter> exporter_;
  std::unique_ptr<cuda::IpcImporter> importer_;
};

}  // namespace rankmesh
