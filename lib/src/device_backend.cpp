#include "rankmesh/device_backend.hpp"

#include <cstring>
#include <string>

#include "rankmesh/error.hpp"

namespace rankmesh {

namespace {

std::byte* bytes_of(const Tensor& tensor) { return static_cast<std::byte*>(tensor.data()); }

// Makes `stream` wait on the producer of `tensor`'s bytes, if any is pending.
void wait_ready(Stream& stream, const Tensor& tensor) {
  if (const auto& ready = tensor.ready_event()) stream.wait(*ready);
}

}  // namespace

DeviceBackend::~DeviceBackend() = default;

std::vector<std::uint8_t> DeviceBackend::export_to_peer(const Tensor&, Stream&,
                                                        std::chrono::steady_clock::time_point) {
  throw Error(Errc::device, to_string(device()) + " cannot share its memory with other processes");
}

Tensor DeviceBackend::import_from_peer(std::span<const std::uint8_t>, Shape, DType, Stream&) {
  throw Error(Errc::device, to_string(device()) + " cannot read another process's memory");
}

void DeviceBackend::check_stream(const Stream& stream, const char* op) const {
  if (&stream.backend() != this) {
    throw Error(Errc::invalid_argument, std::string(op) + ": " + stream.name() +
                                            " belongs to another backend than the one of " +
                                            to_string(device()));
  }
}

void DeviceBackend::check_range(const Tensor& tensor, std::size_t offset, std::size_t bytes,
                                const char* op, const char* role) const {
  if (!tensor.defined()) {
    throw Error(Errc::invalid_argument, std::string(op) + ": the " + role + " tensor is undefined");
  }
  if (tensor.device() != device()) {
    throw Error(Errc::invalid_argument, std::string(op) + ": the " + role + " tensor is on " +
                                            to_string(tensor.device()) + ", this backend is " +
                                            to_string(device()));
  }
  const std::size_t size = tensor.nbytes();
  if (offset > size || bytes > size - offset) {
    throw Error(Errc::invalid_argument,
                std::string(op) + ": bytes [" + std::to_string(offset) + ", " +
                    std::to_string(offset) + " + " + std::to_string(bytes) + ") lie outside the " +
                    role + " tensor's " + std::to_string(size) + " bytes");
  }
}

std::shared_ptr<Event> DeviceBackend::copy_to_host(const Tensor& src, void* host_dst,
                                                   Stream& stream) {
  return copy_to_host(src, 0, host_dst, src.defined() ? src.nbytes() : 0, stream);
}

std::shared_ptr<Event> DeviceBackend::copy_to_host(const Tensor& src, std::size_t src_offset,
                                                   void* host_dst, std::size_t bytes,
                                                   Stream& stream) {
  check_stream(stream, "copy_to_host");
  check_range(src, src_offset, bytes, "copy_to_host", "source");
  if (bytes > 0 && host_dst == nullptr) {
    throw Error(Errc::invalid_argument, "copy_to_host: null host destination");
  }
  if (bytes > 0) {
    wait_ready(stream, src);
    enqueue_copy_to_host(src, src_offset, host_dst, bytes, stream);
  }
  return stream.record();
}

std::shared_ptr<Event> DeviceBackend::copy_from_host(const void* host_src, Tensor& dst,
                                                     Stream& stream) {
  return copy_from_host(host_src, dst.defined() ? dst.nbytes() : 0, dst, 0, stream);
}

std::shared_ptr<Event> DeviceBackend::copy_from_host(const void* host_src, std::size_t bytes,
                                                     Tensor& dst, std::size_t dst_offset,
                                                     Stream& stream) {
  check_stream(stream, "copy_from_host");
  check_range(dst, dst_offset, bytes, "copy_from_host", "destination");
  if (bytes > 0 && host_src == nullptr) {
    throw Error(Errc::invalid_argument, "copy_from_host: null host source");
  }
  if (bytes > 0) {
    wait_ready(stream, dst);
    enqueue_copy_from_host(host_src, bytes, dst, dst_offset, stream);
  }
  auto done = stream.record();
  dst.set_ready_event(done);
  return done;
}

std::shared_ptr<Event> DeviceBackend::copy(const Tensor& src, Tensor& dst, Stream& stream) {
  if (src.defined() && dst.defined() && (src.shape() != dst.shape() || src.dtype() != dst.dtype())) {
    throw Error(Errc::invalid_argument,
                std::string("copy: source ") + to_string(src.dtype()) + to_string(src.shape()) +
                    " and destination " + to_string(dst.dtype()) + to_string(dst.shape()) +
                    " differ; copy a byte range to copy between different shapes");
  }
  return copy(src, 0, dst, 0, src.defined() ? src.nbytes() : 0, stream);
}

std::shared_ptr<Event> DeviceBackend::copy(const Tensor& src, std::size_t src_offset, Tensor& dst,
                                           std::size_t dst_offset, std::size_t bytes,
                                           Stream& stream) {
  check_stream(stream, "copy");
  check_range(src, src_offset, bytes, "copy", "source");
  check_range(dst, dst_offset, bytes, "copy", "destination");
  if (bytes > 0) {
    wait_ready(stream, src);
    if (dst.ready_event() != src.ready_event()) wait_ready(stream, dst);
    enqueue_copy(src, src_offset, dst, dst_offset, bytes, stream);
  }
  auto done = stream.record();
  dst.set_ready_event(done);
  return done;
}

HostBackend::HostBackend() : default_stream_(make_host_stream(*this)) {}

HostBackend::~HostBackend() = default;

Tensor HostBackend::allocate(Shape shape, DType dtype) { return Tensor::empty(shape, dtype); }

std::shared_ptr<Stream> HostBackend::create_stream() { return make_host_stream(*this); }

// The lambdas hold the tensors, so their memory stays alive until the copy has run.

void HostBackend::enqueue_copy_to_host(const Tensor& src, std::size_t src_offset, void* host_dst,
                                       std::size_t bytes, Stream& stream) {
  stream.enqueue([src, src_offset, host_dst, bytes] {
    std::memcpy(host_dst, bytes_of(src) + src_offset, bytes);
  });
}

void HostBackend::enqueue_copy_from_host(const void* host_src, std::size_t bytes,
                                         const Tensor& dst, std::size_t dst_offset,
                                         Stream& stream) {
  stream.enqueue([host_src, bytes, dst, dst_offset] {
    std::memcpy(bytes_of(dst) + dst_offset, host_src, bytes);
  });
}

void HostBackend::enqueue_copy(const Tensor& src, std::size_t src_offset, const Tensor& dst,
                               std::size_t dst_offset, std::size_t bytes, Stream& stream) {
  // memmove: source and destination may be ranges of one tensor.
  stream.enqueue([src, src_offset, dst, dst_offset, bytes] {
    std::memmove(bytes_of(dst) + dst_offset, bytes_of(src) + src_offset, bytes);
  });
}

HostBackend& host_backend() {
  // Never destroyed: streams and guards of other static objects may still use it at exit, and
  // its default stream's worker, parked with nothing to do, needs no joining.
  static HostBackend* backend = new HostBackend();
  return *backend;
}

}  // namespace rankmesh
