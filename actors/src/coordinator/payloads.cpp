#include "coordinator/payloads.hpp"

#include <cstring>

#include "coordinator/device_ipc.hpp"
#include "coordinator/device_staging.hpp"
#include "payload_block.hpp"

#include "rankmesh/device_backend.hpp"

namespace rankmesh {
namespace {
const ChannelTraits& traits_to(const Call& call, int dst) {
  return call.rank().links().traits_to(call.group().global_rank(dst));
}

// copied_on_send() over a link whose traits are known.
bool copied_by(const ChannelTraits& traits, const Tensor& t) {
  return host_bytes_ready(t) && !traits.reads_after_send(t.nbytes());
}
}  // namespace

Tensor copy_for_peer(const Call& call, const Tensor& t) {
  RankContext& rank = call.rank();
  if (host_bytes_ready(t)) {
    Tensor out = rank.allocate(t.shape(), t.dtype());
    if (t.nbytes()) std::memcpy(out.data(), t.data(), t.nbytes());
    return out;
  }
  DeviceBackend& backend = rank.backend_for(t.device());
  Tensor out = t.device().type == DeviceType::cpu ? rank.allocate(t.shape(), t.dtype())
                                                  : backend.allocate(t.shape(), t.dtype());
  backend.copy(t, out, rank.stream_for(t.device()));
  current_stream(backend).wait(*out.ready_event());
  return out;
}

bool copied_on_send(const Call& call, const Tensor& t, int dst) {
  return copied_by(traits_to(call, dst), t);
}

void append_payload(const Call& call, const Tensor& t, int dst, bool donated, Frame& frame,
                    DeviceExports* exports) {
  if (on_device(t)) {
    const ChannelTraits& traits = traits_to(call, dst);
    if (!traits.carries_device_memory) {
      if (exports != nullptr)
        if (Tensor descriptor = exports->try_export(call, t, dst, donated, frame.tensors.size());
            descriptor.defined()) {
          frame.tensors.push_back(std::move(descriptor));
          return;
        }
      if (traits.writes_progressively && t.nbytes() > kStagingChunkBytes) {
        frame.chunked.push_back(staged_to_host_in_chunks(call.rank(), t, call.where()));
        frame.tensors.push_back(frame.chunked.back().tensor);
      } else {
        frame.tensors.push_back(staged_to_host(call.rank(), t, call.left(), call.where()));
      }
      return;
    }
  }
  if (!donated) {  // (a donated tensor is not looked at: the per-message path of a stream)
    const ChannelTraits& traits = traits_to(call, dst);
    if (!copied_by(traits, t)) {
      // A channel that copies while it sends gets the caller's tensor, marked: its copy overlaps
      // the receiver's reads instead of coming before them.
      if (traits.copies_while_sending && host_bytes_ready(t))
        frame.borrowed.push_back(static_cast<std::uint32_t>(frame.tensors.size()));
      else
        return frame.tensors.push_back(copy_for_peer(call, t));
    }
  }
  frame.tensors.push_back(t);
}

void append_payloads(const Call& call, std::span<const Tensor* const> tensors, int dst,
                     bool donated, Frame& frame, DeviceExports* exports) {
  PayloadBlock block;
  if (!donated) {
    // The host tensors append_payload() would copy for the peer, the link's traits looked up
    // once.
    const ChannelTraits& traits = traits_to(call, dst);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const Tensor& t = *tensors[i];
      if (PayloadBlock::small(t.nbytes()) && copied_for_peer(traits, t))
        block.count(i, t.nbytes());
    }
    block.allocate(call.rank().allocator());
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = *tensors[i];
    if (t.numel() == 0) continue;
    if (block.shares(i)) {
      const Tensor& part = frame.tensors.emplace_back(block.take(t.shape(), t.dtype()));
      std::memcpy(part.data(), t.data(), t.nbytes());
      continue;
    }
    append_payload(call, t, dst, donated, frame, exports);
  }
}

void require_host_ready(const Call& call, const Tensor& t) {
  if (!t.defined()) throw Error(Errc::invalid_argument, call.where() + ": undefined tensor");
  if (t.device().type != DeviceType::cpu)
    throw Error(Errc::invalid_argument, call.where() + " computes on host tensors, got one on " +
                                            to_string(t.device()));
  if (const auto& ready = t.ready_event(); ready && !ready->query()) ready->synchronize(call.left());
}

void wait_for_ready_event(const Call& call, const Tensor& t) {
  const auto& ready = t.ready_event();
  if (ready->query()) return;
  if (t.device().type == DeviceType::cpu) {
    ready->synchronize(call.left());
  } else {
    current_stream(call.rank().backend_for(t.device())).wait(*ready);
  }
}

void copy_into(const Call& call, const Tensor& received, const Tensor& dest) {
  if (received.device() == dest.device() && dest.device().type == DeviceType::cpu &&
      (!dest.ready_event() || dest.ready_event()->query())) {
    std::memcpy(dest.data(), received.data(), dest.nbytes());
    return;
  }
  if (received.device().type == DeviceType::cpu && on_device(dest)) {
    Tensor target = dest;  // a staged payload lands: host bytes onto the device
    stage_into(call.rank(), received, target);
    make_received_ready(call, target);
    return;
  }
  if (!(received.device() == dest.device()))
    throw Error(Errc::invalid_argument, call.where() + ": cannot land a tensor from " +
                                            to_string(received.device()) + " in a buffer on " +
                                            to_string(dest.device()));
  DeviceBackend& backend = call.rank().backend_for(dest.device());
  Tensor target = dest;
  backend.copy(received, target, call.rank().stream_for(dest.device()));
  make_received_ready(call, target);
}

Tensor flat_slice(const Call& call, const Tensor& t, std::int64_t start, std::int64_t count) {
  require_host_ready(call, t);
  Tensor out = call.rank().allocate(Shape{count}, t.dtype());
  const std::size_t size = dtype_size(t.dtype());
  if (count) std::memcpy(out.data(), bytes_of(t) + static_cast<std::size_t>(start) * size,
                         static_cast<std::size_t>(count) * size);
  return out;
}

Tensor take_only_tensor(const Call& call, int src, Frame& frame) {
  if (frame.tensors.size() != 1)
    throw Error(Errc::malformed, call.where() + ": " + call.who(src) + " sent " +
                                     std::to_string(frame.tensors.size()) + " tensors, expected 1");
  Tensor t = std::move(frame.tensors.front());
  frame.tensors.clear();
  make_received_ready(call, t);
  return t;
}

void check_matches(const Call& call, int src, const Tensor& got, const Tensor& mine, int dim,
                   bool any_rows) {
  bool ok = got.dtype() == mine.dtype() && got.shape().rank() == mine.shape().rank();
  for (int i = 0; ok && i < mine.shape().rank(); ++i)
    ok = (i == dim && any_rows) || got.shape()[i] == mine.shape()[i];
  if (!ok)
    throw call.payload_mismatch(src, got, to_string(mine.shape()) + " " + to_string(mine.dtype()) +
                                              (any_rows ? " (any size along dim " +
                                                              std::to_string(dim) + ")"
                                                        : ""));
}

}  // namespace rankmesh
