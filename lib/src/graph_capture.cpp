#include "rankmesh/graph_capture.hpp"

#include <utility>

#include "rankmesh/device_backend.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {

GraphCapture::GraphCapture(DeviceBackend& backend) : GraphCapture(backend.create_stream()) {}

GraphCapture::GraphCapture() : GraphCapture(host_backend()) {}

GraphCapture::GraphCapture(std::shared_ptr<Stream> stream)
    : stream_(std::move(stream)), guard_(enter(stream_)) {}

GraphCapture::~GraphCapture() = default;

Stream& GraphCapture::enter(const std::shared_ptr<Stream>& stream) {
  if (!stream) throw Error(Errc::invalid_argument, "graph capture needs a stream, got null");
  // Captured work must see everything the current stream was asked to do before the capture.
  stream->wait_stream(current_stream(stream->backend()));
  return *stream;
}

}  // namespace rankmesh
