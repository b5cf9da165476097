// DeviceBackend: what a device offers the rest of rankmesh: memory, streams and copies.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "rankmesh/device.hpp"
#include "rankmesh/dtype.hpp"
#include "rankmesh/event.hpp"
#include "rankmesh/stream.hpp"
#include "rankmesh/tensor.hpp"

namespace rankmesh {

// One device's memory, streams and copy operations. The copies are the only way transports
// touch tensor memory, so a device the host cannot read (a GPU) needs no transport change.
//
// Each copy is enqueued on `stream` (one of this backend's) and returns the event that completes
// when it is done. The stream first waits on the ready events of `src` and `dst` (no reading
// unfinished bytes, no overwriting bytes still being produced); `dst`'s ready event becomes the
// copy's. Tensors stay alive until the copy has run; host buffers must stay valid until the
// event completes. Offsets and sizes are in bytes. A range outside a tensor, a tensor of another
// device or a stream of another backend is Error(invalid_argument). Pending readers are not
// tracked: do not overwrite a tensor before the copies reading it have completed.
class DeviceBackend {
public:
  virtual ~DeviceBackend();
  DeviceBackend() = default;
  DeviceBackend(const DeviceBackend&) = delete;
  DeviceBackend& operator=(const DeviceBackend&) = delete;

  virtual Device device() const noexcept = 0;
  // Memory for a tensor of `shape` x `dtype` on this device, ready now; contents unspecified.
  virtual Tensor allocate(Shape shape, DType dtype) = 0;
  virtual std::shared_ptr<Stream> create_stream() = 0;
  // The stream a thread uses when no StreamGuard says otherwise.
  virtual Stream& default_stream() = 0;
  // Host memory (cpu:0) this device copies to and from fastest, for staging its tensors through
  // the host (transports that carry host memory only, collectives computed on the host):
  // page-locked memory for a GPU. Default: ordinary host memory.
  virtual Tensor allocate_host(Shape shape, DType dtype) { return Tensor::empty(shape, dtype); }

  // All of `src`'s bytes into `host_dst`.
  std::shared_ptr<Event> copy_to_host(const Tensor& src, void* host_dst, Stream& stream);
  // `bytes` bytes of `src` from `src_offset` into `host_dst`.
  std::shared_ptr<Event> copy_to_host(const Tensor& src, std::size_t src_offset, void* host_dst,
                                      std::size_t bytes, Stream& stream);
  // dst.nbytes() bytes from `host_src` into `dst`.
  std::shared_ptr<Event> copy_from_host(const void* host_src, Tensor& dst, Stream& stream);
  // `bytes` bytes from `host_src` into `dst` at `dst_offset`.
  std::shared_ptr<Event> copy_from_host(const void* host_src, std::size_t bytes, Tensor& dst,
                                        std::size_t dst_offset, Stream& stream);
  // All of `src` into `dst`, which must have the same shape and dtype.
  std::shared_ptr<Event> copy(const Tensor& src, Tensor& dst, Stream& stream);
  // `bytes` bytes of `src` from `src_offset` into `dst` at `dst_offset`.
  std::shared_ptr<Event> copy(const Tensor& src, std::size_t src_offset, Tensor& dst,
                              std::size_t dst_offset, std::size_t bytes, Stream& stream);

  // Same-node sharing (CUDA IPC): another process of this node copies a tensor straight out of
  // this device's memory, instead of its bytes being staged through host memory and back. A
  // backend that cannot (the default) throws Error(device) from both; callers then stage.
  //
  // Exporter: descriptor bytes naming `t`'s memory and the point of `stream` after which its
  // bytes are final (all work enqueued on `stream` so far). `t` must be the exporter's own copy,
  // written by nothing once exported: held until the importer's copy of it has completed, else
  // (an importer that died or never receives) a while past `hold_until` (CUDA: as long again),
  // from which on imports are refused; an accepted import's copy has that while to run.
  virtual std::vector<std::uint8_t> export_to_peer(const Tensor& t, Stream& stream,
                                                   std::chrono::steady_clock::time_point hold_until);
  // Importer: a new tensor of `shape` x `dtype` on this device with the exported bytes, copied
  // device-to-device on `stream` once the exporter's point has passed; its ready event is the
  // copy's, and the exporter's hold ends once that copy has completed. Error(malformed) for
  // bytes that are no descriptor of this backend or do not fit `shape` x `dtype`,
  // Error(peer_failed) for an export that is gone, Error(device) where it cannot import.
  virtual Tensor import_from_peer(std::span<const std::uint8_t> descriptor, Shape shape,
                                  DType dtype, Stream& stream);

protected:
  // Enqueue the byte moves on `stream`. Called with checked arguments, bytes > 0, and the stream
  // already waiting on the tensors' ready events; the caller records the event afterwards.
  virtual void enqueue_copy_to_host(const Tensor& src, std::size_t src_offset, void* host_dst,
                                    std::size_t bytes, Stream& stream) = 0;
  virtual void enqueue_copy_from_host(const void* host_src, std::size_t bytes, const Tensor& dst,
                                      std::size_t dst_offset, Stream& stream) = 0;
  virtual void enqueue_copy(const Tensor& src, std::size_t src_offset, const Tensor& dst,
                            std::size_t dst_offset, std::size_t bytes, Stream& stream) = 0;

private:
  void check_stream(const Stream& stream, const char* op) const;
  void check_range(const Tensor& tensor, std::size_t offset, std::size_t bytes, const char* op,
                   const char* role) const;
};

// Host memory, which the host reads directly; copies are memcpy/memmove on host streams.
class HostBackend final : public DeviceBackend {
public:
  HostBackend();  // device cpu:0
  ~HostBackend() override;

  Device device() const noexcept override { return Device{DeviceType::cpu, 0}; }
  // Tensor::empty: 64-byte aligned and zeroed.
  Tensor allocate(Shape shape, DType dtype) override;
  std::shared_ptr<Stream> create_stream() override;
  Stream& default_stream() override { return *default_stream_; }

protected:
  void enqueue_copy_to_host(const Tensor& src, std::size_t src_offset, void* host_dst,
                            std::size_t bytes, Stream& stream) override;
  void enqueue_copy_from_host(const void* host_src, std::size_t bytes, const Tensor& dst,
                              std::size_t dst_offset, Stream& stream) override;
  void enqueue_copy(const Tensor& src, std::size_t src_offset, const Tensor& dst,
                    std::size_t dst_offset, std::size_t bytes, Stream& stream) override;

private:
  std::shared_ptr<Stream> default_stream_;
};

// The process's host backend, created on first use.
HostBackend& host_backend();

}  // namespace rankmesh
