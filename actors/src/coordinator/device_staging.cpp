#include "coordinator/device_staging.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "rank_context.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {

namespace {

// The caller's current stream of `backend`, where staging copies run. Error(device) naming
// `what` while it is being captured into a CUDA graph (the copies would run only on replay).
Stream& staging_stream(DeviceBackend& backend, const std::string& what) {
  Stream& stream = current_stream(backend);
  if (stream.capturing())
    throw Error(Errc::device, what + ": " + stream.name() +
                                  " is being captured into a CUDA graph, and this operation "
                                  "stages the tensor's bytes through host memory, which a graph "
                                  "cannot capture; run it outside the capture");
  return stream;
}

}  // namespace

Tensor staged_to_host(RankContext& rank, const Tensor& t, std::chrono::nanoseconds timeout,
                      const std::string& what) {
  DeviceBackend& backend = rank.backend_for(t.device());
  Stream& stream = staging_stream(backend, what);
  Tensor host = backend.allocate_host(t.shape(), t.dtype());
  if (t.nbytes() == 0) return host;
  auto copied = backend.copy_to_host(t, host.data(), stream);
  if (!copied->wait_for(timeout))
    throw Error(Errc::timeout, what + ": the copy of a " + to_string(t.device()) +
                                   " tensor to host memory did not finish in time on " +
                                   stream.name() + " (the work producing it is still running?)");
  if (auto error = copied->error()) std::rethrow_exception(error);
  return host;
}

ChunkedPayload staged_to_host_in_chunks(RankContext& rank, const Tensor& t,
                                        const std::string& what) {
  DeviceBackend& backend = rank.backend_for(t.device());
  Stream& stream = staging_stream(backend, what);
  ChunkedPayload out{backend.allocate_host(t.shape(), t.dtype()), kStagingChunkBytes, {}};
  const std::size_t nbytes = t.nbytes();
  if (nbytes == 0) return out;
  // The copies write into the host memory until they have run, even when the send gives up on
  // them first (its deadline) or a later copy cannot be issued: it is held until the last one
  // issued has run. (A tensor without the ready event, which would otherwise hold itself.)
  auto hold_until_copied = [&] {
    Tensor keep = out.tensor;
    keep.set_ready_event(nullptr);
    if (!out.ready.empty()) out.ready.back()->on_complete([keep = std::move(keep)] {});
  };
  auto* bytes = static_cast<std::byte*>(out.tensor.data());
  out.ready.reserve((nbytes + kStagingChunkBytes - 1) / kStagingChunkBytes);
  try {
    for (std::size_t begin = 0; begin < nbytes; begin += kStagingChunkBytes) {
      const std::size_t size = std::min(kStagingChunkBytes, nbytes - begin);
      out.ready.push_back(backend.copy_to_host(t, begin, bytes + begin, size, stream));
    }
  } catch (...) {
    hold_until_copied();
    throw;
  }
  hold_until_copied();
  out.tensor.set_ready_event(out.ready.back());
  return out;
}

Tensor staged_to_device(RankContext& rank, const Tensor& host, Device device) {
  DeviceBackend& backend = rank.backend_for(device);
  Tensor out = backend.allocate(host.shape(), host.dtype());
  stage_into(rank, host, out);
  return out;
}

void stage_into(RankContext& rank, const Tensor& host, Tensor& dst) {
  if (host.nbytes() == 0) return;
  DeviceBackend& backend = rank.backend_for(dst.device());
  // Received bytes sit in pageable memory (the transport's pool). A GPU copies from there only
  // synchronously, which would hold the copy back on the stream's own thread, out of reach of
  // kernels an engine launches on the stream itself; a copy into staging memory first (page-
  // locked for a GPU) keeps the device copy asynchronous and ordered on the device.
  Tensor source = backend.allocate_host(host.shape(), host.dtype());
  std::memcpy(source.data(), host.data(), host.nbytes());
  auto copied = backend.copy_from_host(source.data(), dst, current_stream(backend));
  // The copy reads `source` until it has run: hold it until then.
  copied->on_complete([keep = std::move(source)] {});
}

Device receiving_device(RankContext& rank, DeviceType type, const std::string& what) {
  if (type == DeviceType::cpu) return Device{};
  if (const DeviceBackend* backend = rank.backend_of_type(type)) return backend->device();
  throw Error(Errc::invalid_argument,
              what + ": a " + std::string(to_string(type)) + " tensor arrived, but rank " +
                  std::to_string(rank.rank()) + " has no " + to_string(type) +
                  " backend to put it on (pass one in RuntimeOptions::backends)");
}

Tensor allocate_received(RankContext& rank, DeviceType type, const Shape& shape, DType dtype,
                         const std::string& what) {
  if (type == DeviceType::cpu) return rank.allocate(shape, dtype);
  return rank.backend_for(receiving_device(rank, type, what)).allocate(shape, dtype);
}

}  // namespace rankmesh
