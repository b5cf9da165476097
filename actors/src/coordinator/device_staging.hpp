// DeviceStaging: device tensors where rankmesh moves or computes host bytes only. Collectives
// compute on the host, and shm and tcp carry host memory, so a device tensor (a GPU's) is
// staged: its bytes copied into host memory its device copies fastest (page-locked for a GPU:
// DeviceBackend::allocate_host) on the caller's current stream of that device, once its ready
// event has completed; the host bytes used; and what comes back copied to the device on the same
// stream, the new tensor's ready event set so that the caller's later work waits on the device,
// never its thread. Only the copy to host is waited for, since the host must read its bytes.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "coordinator/group_state.hpp"
#include "frame.hpp"
#include "rankmesh/device_backend.hpp"

namespace rankmesh {

class RankContext;

inline bool on_device(const Tensor& t) noexcept {
  return t.defined() && t.device().type != DeviceType::cpu;
}

// `t`'s bytes in host memory, waited for at most `timeout`. `what` ("all_reduce on tp:0") names
// the operation in errors: a CUDA graph capture in progress on the stream (the copy would only
// run when the graph is replayed) or a copy that does not finish in time.
Tensor staged_to_host(RankContext& rank, const Tensor& t, std::chrono::nanoseconds timeout,
                      const std::string& what);
// Device tensors of more bytes than this go to a channel that writes payloads progressively
// (tcp) in chunks of this size, so that the copy of one chunk overlaps the sending of the one
// before. A few MiB: large enough that a chunk's copy and its event cost little beside it, small
// enough that the first chunk leaves early.
inline constexpr std::size_t kStagingChunkBytes = std::size_t{4} << 20;

// `t`'s bytes copied into host memory chunk by chunk (kStagingChunkBytes) on the caller's
// current stream, nothing waited for: each chunk's copy has its event, and the host tensor's
// ready event is the last chunk's. The channel waits for each chunk, bounded by the operation's
// deadline. `what` names the operation in errors (a CUDA graph capture in progress).
ChunkedPayload staged_to_host_in_chunks(RankContext& rank, const Tensor& t,
                                        const std::string& what);
// A new tensor on `device` holding `host`'s bytes, ready once the copy has run on the caller's
// current stream (`host` is kept alive until then).
Tensor staged_to_device(RankContext& rank, const Tensor& host, Device device);
// `host`'s bytes into `dst` (same size), on the caller's current stream of dst's device.
void stage_into(RankContext& rank, const Tensor& host, Tensor& dst);
// The device of `type` this rank keeps received tensors on (its backend of that type), for
// tensors that travelled as host bytes. Error(invalid_argument) naming `what` without one.
Device receiving_device(RankContext& rank, DeviceType type, const std::string& what);
// A fresh tensor of `shape` x `dtype` where this rank keeps received tensors of `type`: host
// memory from the rank's allocator, or its backend of that type (receiving_device()).
Tensor allocate_received(RankContext& rank, DeviceType type, const Shape& shape, DType dtype,
                         const std::string& what);

// A collective computed on the host, run on `input`: as it is for a host tensor; for a device
// tensor on its bytes staged to host, the result (when defined: gather's non-destinations get
// none) staged back onto the input's device.
template <class HostCollective>
Tensor through_host(GroupState& group, const char* operation, const Tensor& input,
                    HostCollective&& collective) {
  if (!on_device(input)) return collective(input);
  RankContext& rank = *group.rank_context;
  const std::string what = std::string(operation) + " on " + group.name;
  Tensor result = collective(staged_to_host(rank, input, group.timeout, what));
  return result.defined() ? staged_to_device(rank, result, input.device()) : result;
}

}  // namespace rankmesh
