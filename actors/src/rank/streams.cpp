#include "rank/streams.hpp"

#include <algorithm>
#include <string>

#include "rankmesh/error.hpp"

namespace rankmesh {

DeviceBackend& RankStreams::backend_for(const Device& device) {
  if (device.type == DeviceType::cpu) return host_backend();
  for (DeviceBackend* backend : backends_)
    if (backend->device() == device) return *backend;
  throw Error(Errc::invalid_argument, "rank " + std::to_string(rank_) + ": no device backend for " +
                                          to_string(device) + " (pass it in RuntimeOptions::backends)");
}

DeviceBackend* RankStreams::backend_of_type(DeviceType type) const noexcept {
  for (DeviceBackend* backend : backends_)
    if (backend->device().type == type) return backend;
  return nullptr;
}

Stream& RankStreams::stream_for(const Device& device) {
  std::lock_guard lock(mutex_);
  auto& stream = streams_[{static_cast<int>(device.type), device.index}];
  if (!stream) stream = backend_for(device).create_stream();
  return *stream;
}

void RankStreams::synchronize(Deadline deadline) {
  std::vector<std::shared_ptr<Stream>> streams;
  {
    std::lock_guard lock(mutex_);
    for (auto& entry : streams_) streams.push_back(entry.second);
  }
  for (auto& stream : streams)
    stream->synchronize(std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::max(Clock::duration::zero(), deadline - Clock::now())));
}

}  // namespace rankmesh
