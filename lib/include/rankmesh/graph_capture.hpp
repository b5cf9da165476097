// GraphCapture: a scope whose work goes to a side stream, as CUDA graph capture needs.
#pragma once

#include <memory>

#include "rankmesh/stream.hpp"

namespace rankmesh {

class DeviceBackend;

// On entry the side stream waits for the work enqueued so far on this thread's current stream
// and becomes the current stream; on exit the previous current stream is restored (nothing
// joins back: captured work is replayed later, not now). Passing an existing stream lets several
// groups (TP and PP) capture on one: nested captures on the same stream do not wait on
// themselves. Create and destroy on one thread.
class GraphCapture {
public:
  // A fresh side stream of `backend`.
  explicit GraphCapture(DeviceBackend& backend);
  // A fresh side stream of host_backend().
  GraphCapture();
  // `stream`, shared with other captures; Error(invalid_argument) when null.
  explicit GraphCapture(std::shared_ptr<Stream> stream);
  ~GraphCapture();
  GraphCapture(const GraphCapture&) = delete;
  GraphCapture& operator=(const GraphCapture&) = delete;

  Stream& stream() const noexcept { return *stream_; }
  // To hand to the next capture that should share this stream.
  const std::shared_ptr<Stream>& shared_stream() const noexcept { return stream_; }

private:
  static Stream& enter(const std::shared_ptr<Stream>& stream);

  std::shared_ptr<Stream> stream_;
  StreamGuard guard_;  // after stream_: constructed once the side stream waits
};

}  // namespace rankmesh
