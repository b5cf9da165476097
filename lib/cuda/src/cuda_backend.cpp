#include "rankmesh/cuda_backend.hpp"

#include <cuda_runtime_api.h>

#include <cstring>

#include "cuda_check.hpp"
#include "cuda_stream.hpp"
#include "device_allocator.hpp"
#include "event_pool.hpp"
#include "ipc_exporter.hpp"
#include "ipc_importer.hpp"
#include "pinned_pool.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {

using cuda::check;
using cuda::DeviceScope;

// What the backend's tensors need after the backend is gone: their memory's owners.
class CudaBackend::Impl {
public:
  explicit Impl(const CudaBackendOptions& options)
      : device(options.device),
        memory(options.device, options.memory, options.cache_limit_bytes),
        pinned(options.device, options.pinned_limit_bytes),
        events(std::make_shared<cuda::EventPool>(options.device)) {}

  const int device;
  cuda::DeviceAllocator memory;
  cuda::PinnedPool pinned;
  const std::shared_ptr<cuda::EventPool> events;
};

namespace {

cuda::CudaStream& cuda_stream(Stream& stream) {
  // DeviceBackend's checks made sure the stream is one of this backend's.
  return static_cast<cuda::CudaStream&>(stream);
}

// `stream` as one of `backend`'s CUDA streams, checked (the hooks are called from outside
// DeviceBackend's checked copy entry points).
cuda::CudaStream& own_stream(const CudaBackend& backend, Stream& stream, const char* op) {
  if (&stream.backend() != &backend)
    throw Error(Errc::invalid_argument, std::string(op) + ": " + stream.name() +
                                            " belongs to another backend than the one of " +
                                            to_string(backend.device()));
  return static_cast<cuda::CudaStream&>(stream);
}

const std::byte* bytes_at(const Tensor& t, std::size_t offset) {
  return static_cast<const std::byte*>(t.data()) + offset;
}
std::byte* mutable_bytes_at(const Tensor& t, std::size_t offset) {
  return static_cast<std::byte*>(t.data()) + offset;
}

// Page-locked (or registered) host memory: copies to and from it are truly asynchronous. Copies
// with pageable memory are not (CUDA waits for the stream inside the call), so they run on the
// stream's own thread instead of blocking the caller.
bool pinned(const void* host) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, host) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attributes.type == cudaMemoryTypeHost;
}

}  // namespace

int CudaBackend::device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

std::string CudaBackend::unavailable_reason() {
  int count = 0;
  const cudaError_t result = cudaGetDeviceCount(&count);
  if (result != cudaSuccess) {
    (void)cudaGetLastError();
    return cuda::describe(result);
  }
  return count > 0 ? std::string() : "no CUDA device is visible to this process";
}

CudaBackend::CudaBackend(CudaBackendOptions options) {
  const int count = device_count();
  if (options.device < 0 || options.device >= count)
    throw Error(Errc::device, "CudaBackend: cuda:" + std::to_string(options.device) +
                                  " is not available (" + std::to_string(count) + " device(s)" +
                                  (count == 0 ? ": " + unavailable_reason() : std::string()) + ")");
  impl_ = std::make_shared<Impl>(options);
  {
    DeviceScope scope(impl_->device);
    check(cudaFree(nullptr), "creating the CUDA context", impl_->device);
  }
  default_stream_ = create_stream();
  exporter_ = std::make_unique<cuda::IpcExporter>(impl_->device);
  importer_ = std::make_unique<cuda::IpcImporter>(impl_->device);
}

CudaBackend::~CudaBackend() = default;

Device CudaBackend::device() const noexcept { return Device{DeviceType::cuda, impl_->device}; }

Tensor CudaBackend::allocate(Shape shape, DType dtype) {
  const auto bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
  const Device where = device();
  if (bytes == 0) return Tensor::wrap(nullptr, shape, dtype, where, nullptr);
  void* stream = native_stream(current_stream(*this));
  void* ptr = impl_->memory.allocate(bytes, stream);
  return Tensor::wrap(ptr, shape, dtype, where, [impl = impl_, bytes, stream](void* p) {
    impl->memory.release(p, bytes, stream);
  });
}

std::shared_ptr<Stream> CudaBackend::create_stream() {
  DeviceScope scope(impl_->device);
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags",
        impl_->device);
  return std::make_shared<cuda::CudaStream>(*this, impl_->device, stream, true, impl_->events);
}

Stream& CudaBackend::default_stream() { return *default_stream_; }

std::shared_ptr<Stream> CudaBackend::wrap_stream(void* cuda_stream) {
  if (cuda_stream == nullptr)
    throw Error(Errc::invalid_argument,
                "CudaBackend::wrap_stream: null is CUDA's legacy default stream, which "
                "synchronizes with every other stream; pass a stream the engine created");
  return std::make_shared<cuda::CudaStream>(*this, impl_->device,
                                            static_cast<cudaStream_t>(cuda_stream), false,
                                            impl_->events);
}

void* CudaBackend::native_stream(const Stream& stream) {
  const auto* cuda = dynamic_cast<const cuda::CudaStream*>(&stream);
  if (cuda == nullptr)
    throw Error(Errc::invalid_argument, stream.name() + " is not a CUDA stream");
  return cuda->native();
}

Tensor CudaBackend::allocate_pinned(Shape shape, DType dtype) {
  const auto bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
  void* ptr = bytes == 0 ? nullptr : impl_->pinned.take(bytes);
  if (ptr == nullptr) return Tensor::empty(shape, dtype);
  return Tensor::wrap(ptr, shape, dtype, Device{DeviceType::cpu, 0},
                      [impl = impl_, bytes](void* p) { impl->pinned.give_back(p, bytes); });
}

CudaBackend::MemoryStats CudaBackend::memory_stats() const {
  MemoryStats stats = impl_->memory.stats();
  stats.pinned_bytes = impl_->pinned.pinned_bytes();
  return stats;
}

void CudaBackend::empty_cache() { impl_->memory.empty_cache(); }

void CudaBackend::enqueue_copy_to_host(const Tensor& src, std::size_t src_offset, void* host_dst,
                                       std::size_t bytes, Stream& stream) {
  const int device = impl_->device;
  if (!pinned(host_dst)) {
    stream.enqueue([src, src_offset, host_dst, bytes, device] {
      DeviceScope scope(device);
      check(cudaMemcpy(host_dst, bytes_at(src, src_offset), bytes, cudaMemcpyDeviceToHost),
            "cudaMemcpy (device to pageable host)", device);
    });
    return;
  }
  DeviceScope scope(device);
  cuda_stream(stream).issue(
      [=, from = bytes_at(src, src_offset)](cudaStream_t s) {
        check(cudaMemcpyAsync(host_dst, from, bytes, cudaMemcpyDeviceToHost, s),
              "cudaMemcpyAsync (device to host)", device);
      },
      src, Tensor());
}

void CudaBackend::enqueue_copy_from_host(const void* host_src, std::size_t bytes,
                                         const Tensor& dst, std::size_t dst_offset,
                                         Stream& stream) {
  const int device = impl_->device;
  if (!pinned(host_src)) {
    stream.enqueue([dst, dst_offset, host_src, bytes, device] {
      DeviceScope scope(device);
      check(cudaMemcpy(mutable_bytes_at(dst, dst_offset), host_src, bytes, cudaMemcpyHostToDevice),
            "cudaMemcpy (pageable host to device)", device);
    });
    return;
  }
  DeviceScope scope(device);
  cuda_stream(stream).issue(
      [=, to = mutable_bytes_at(dst, dst_offset)](cudaStream_t s) {
        check(cudaMemcpyAsync(to, host_src, bytes, cudaMemcpyHostToDevice, s),
              "cudaMemcpyAsync (host to device)", device);
      },
      dst, Tensor());
}

void CudaBackend::enqueue_copy(const Tensor& src, std::size_t src_offset, const Tensor& dst,
                               std::size_t dst_offset, std::size_t bytes, Stream& stream) {
  const int device = impl_->device;
  DeviceScope scope(device);
  cuda_stream(stream).issue(
      [=, from = bytes_at(src, src_offset), to = mutable_bytes_at(dst, dst_offset)](cudaStream_t s) {
        check(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDeviceToDevice, s),
              "cudaMemcpyAsync (device to device)", device);
      },
      src, dst);
}

std::vector<std::uint8_t> CudaBackend::export_to_peer(
    const Tensor& t, Stream& stream, std::chrono::steady_clock::time_point hold_until) {
  if (t.device() != device() || t.nbytes() == 0)
    throw Error(Errc::invalid_argument, "export_to_peer: a non-empty tensor of " + to_string(device()));
  const cuda::IpcDescriptor d =
      exporter_->export_tensor(t, own_stream(*this, stream, "export_to_peer"), hold_until);
  std::vector<std::uint8_t> bytes(sizeof d);
  std::memcpy(bytes.data(), &d, sizeof d);
  return bytes;
}

Tensor CudaBackend::import_from_peer(std::span<const std::uint8_t> descriptor, Shape shape,
                                     DType dtype, Stream& stream) {
  cuda::IpcDescriptor d;
  if (descriptor.size() != sizeof d)
    throw Error(Errc::malformed, "import_from_peer: " + std::to_string(descriptor.size()) +
                                     " bytes are no CUDA IPC descriptor");
  std::memcpy(&d, descriptor.data(), sizeof d);
  if (d.magic != cuda::IpcDescriptor::kMagic || d.version != cuda::IpcDescriptor::kVersion)
    throw Error(Errc::malformed, "import_from_peer: the bytes are no CUDA IPC descriptor of this "
                                 "version");
  const auto bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
  if (d.nbytes != bytes || d.slot >= cuda::IpcExporter::kSlots)
    throw Error(Errc::malformed, "import_from_peer: the export holds " + std::to_string(d.nbytes) +
                                     " bytes, " + to_string(shape) + " " + to_string(dtype) +
                                     " needs " + std::to_string(bytes));
  cuda::CudaStream& on = own_stream(*this, stream, "import_from_peer");
  Tensor dst = allocate(shape, dtype);
  // The acknowledgement's source: page-locked, so that its copy is ordered on the stream.
  Tensor ack = allocate_pinned(Shape{1}, DType::i32);
  std::memcpy(ack.data(), &d.generation, sizeof d.generation);
  importer_->import_into(d, dst, ack, on);
  exporter_->reclaim();
  auto copied = Event::create();
  stream.record(*copied);
  dst.set_ready_event(std::move(copied));
  return dst;
}

std::size_t CudaBackend::exports_held() { return exporter_->held(); }

}  // namespace rankmesh
