// RankStreams: one rank's devices and its stream on each. Copies of payloads run on these
// streams; the host stream also runs the rank's asynchronous operations (OpQueue).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "deadline.hpp"
#include "rankmesh/device_backend.hpp"

namespace rankmesh {

class RankStreams {
public:
  // `backends`: the non-host devices this rank may meet in tensors (the host is always known).
  RankStreams(int rank, std::vector<DeviceBackend*> backends)
      : rank_(rank), backends_(std::move(backends)) {}

  // The backend of a device; Error(invalid_argument) for a device nobody registered.
  DeviceBackend& backend_for(const Device& device);
  // The first registered backend of `type` (the rank's GPU, say), or null.
  DeviceBackend* backend_of_type(DeviceType type) const noexcept;
  // This rank's stream on a device, created on first use.
  Stream& stream_for(const Device& device);
  // Waits, until the deadline, for the work queued on every stream.
  void synchronize(Deadline deadline);

private:
  const int rank_;
  const std::vector<DeviceBackend*> backends_;
  std::mutex mutex_;
  std::map<std::pair<int, int>, std::shared_ptr<Stream>> streams_;  // by (device type, index)
};

}  // namespace rankmesh
