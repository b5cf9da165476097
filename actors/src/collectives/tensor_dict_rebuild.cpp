#include "collectives/tensor_dict_rebuild.hpp"

#include <optional>
#include <utility>
#include <vector>

#include "codec.hpp"
#include "collectives/collectives.hpp"
#include "collectives/send_allgather.hpp"
#include "coordinator/device_ipc.hpp"
#include "coordinator/device_staging.hpp"
#include "coordinator/payloads.hpp"
#include "dict_metadata.hpp"
#include "schema_cache.hpp"

namespace rankmesh {
namespace {

// The dict that `metadata` describes, its tensors the frame's payloads in order: every per-key
// rule applied (buffers given, send-allgather), and everything that does not fit named.
TensorDict rebuild_from_metadata(const Call& call, int src, Frame& frame, Metadata metadata,
                                 GroupState* all_gather_group, const AllGatherTensors& overrides,
                                 const RecvInto& into) {
  const bool keyed = all_gather_group != nullptr || !overrides.empty() || !into.empty();
  // Undoing a slice runs an all-gather, which reuses the rank's scratch frame: hold the
  // payloads apart (swapped, so the frame's capacity comes back afterwards).
  std::vector<Tensor> payloads;
  payloads.swap(frame.tensors);
  std::size_t listed = 0;  // the payloads the metadata lists: one per non-empty tensor
  for (const MetaEntry& entry : metadata.entries)
    if (entry.kind == MetaEntry::Kind::tensor && entry.tensor.shape.numel() != 0) ++listed;
  const DeviceImports imports(call, src, payloads, listed);
  std::vector<Tensor> tensors;
  tensors.reserve(payloads.size());
  std::size_t next_payload = 0;
  for (const MetaEntry& entry : metadata.entries) {
    if (entry.kind != MetaEntry::Kind::tensor) continue;
    const TensorMeta& meta = entry.tensor;
    const std::string key = keyed ? dotted_key(entry.path) : std::string();
    const std::int64_t numel = meta.shape.numel();
    Tensor t;
    if (numel != 0) {
      if (next_payload >= payloads.size())
        throw Error(Errc::malformed, call.where() + ": " + call.who(src) +
                                         " sent fewer payloads than its metadata lists (missing '" +
                                         dotted_key(entry.path) + "')");
      if (imports.is_descriptor(next_payload)) {
        // Exported device memory of a process of this node: copied straight onto our device.
        t = imports.import(call, src, payloads[next_payload++], meta);
      } else {
        t = std::move(payloads[next_payload++]);
      }
      make_received_ready(call, t);
      // A device tensor whose bytes travelled through host memory (shm, tcp) goes back onto
      // this rank's device of its type, unless it lands in a buffer given for it.
      const bool staged = t.device().type != meta.device_type;
      if (staged && t.device().type != DeviceType::cpu)
        throw call.payload_mismatch(src, t, "a " + std::string(to_string(meta.device_type)) + " tensor");
      if (staged && (into.empty() || !into.contains(key)))
        t = staged_to_device(call.rank(), t,
                             receiving_device(call.rank(), meta.device_type, call.where()));
      const bool allowed = meta.sliced ? may_slice(all_gather_group, overrides, key, numel)
                                       : !forced_slicing(overrides, key).value_or(false) ||
                                             !may_slice(all_gather_group, overrides, key, numel);
      if (!allowed)
        throw Error(Errc::mismatch,
                    call.where() + ": '" + dotted_key(entry.path) + "' from " + call.who(src) +
                        " travels " + (meta.sliced ? "as a slice" : "whole") +
                        ", but this receiver's all-gather group and all_gather_tensors say it "
                        "must travel " + (meta.sliced ? "whole" : "as a slice") +
                        "; sender and receiver must pass the same all-gather settings");
      if (meta.sliced) {
        if (t.dtype() != meta.dtype || t.numel() * all_gather_group->size() != numel)
          throw call.payload_mismatch(src, t, "a slice of " + to_string(meta.shape) + " " +
                                                  to_string(meta.dtype));
        t = collectives::all_gather(*all_gather_group, t, 0).view(meta.shape);
      } else if (t.dtype() != meta.dtype || !(t.shape() == meta.shape)) {
        throw call.payload_mismatch(src, t, to_string(meta.shape) + " " + to_string(meta.dtype));
      }
    }
    if (auto it = into.empty() ? into.end() : into.find(key); it != into.end()) {
      const Tensor& dest = it->second;
      // The receiver's expectation against what the sender sent: the ranks disagree (the
      // point-to-point side of collective consensus). The message is used up; the next
      // receive gets the next one.
      if (!dest.defined())
        throw Error(Errc::invalid_argument, call.where() + ": the buffer given for '" + key + "' is undefined");
      if (dest.dtype() != meta.dtype || !(dest.shape() == meta.shape))
        throw call.rank().reported(Error(
            Errc::mismatch, call.where() + ": the buffer given for '" + key + "' is " +
                                to_string(dest.shape()) + " " + to_string(dest.dtype()) +
                                ", but " + call.who(src) + " sent " + to_string(meta.shape) + " " +
                                to_string(meta.dtype) + " under that key"));
      if (numel != 0) copy_into(call, t, dest);
      t = dest;
    } else if (numel == 0) {
      t = allocate_received(call.rank(), meta.device_type, meta.shape, meta.dtype, call.where());
    }
    tensors.push_back(std::move(t));
  }
  if (next_payload != payloads.size())
    throw Error(Errc::malformed, call.where() + ": " + call.who(src) + " sent " +
                                     std::to_string(payloads.size()) +
                                     " payloads, its metadata lists " +
                                     std::to_string(next_payload));
  payloads.clear();
  frame.tensors.swap(payloads);
  return join(std::move(metadata), std::move(tensors));
}

}  // namespace

TensorDict rebuild_tensor_dict(const Call& call, int src, Frame& frame, GroupState* all_gather_group,
                               const AllGatherTensors& overrides, const RecvInto& into) {
  // Keys are spelled out only where a per-key rule may apply (not per message otherwise).
  const bool keyed = all_gather_group != nullptr || !overrides.empty() || !into.empty();
  if (frame.dict) {
    // Handed over whole (one process): it is the dict, unless a per-key rule applies, which
    // the full way below applies to it as to a decoded one.
    std::optional<TensorDict> handed = std::exchange(frame.dict, std::nullopt);
    for (const Tensor& t : frame.tensors) make_received_ready(call, t);
    if (!keyed) {
      frame.tensors.clear();
      return std::move(*handed);
    }
    SplitDict parts = split(*handed);
    frame.tensors.clear();
    for (Tensor& t : parts.tensors)
      if (t.numel() != 0) frame.tensors.push_back(std::move(t));
    return rebuild_from_metadata(call, src, frame, std::move(parts.metadata), all_gather_group,
                                 overrides, into);
  }
  const bool cached = SchemaReceiver::is_cached_frame(frame.metadata);
  const SchemaReceiver* schemas = cached ? &call.group().schemas.from(src) : nullptr;
  if (!keyed) {
    // The common case: the dict is built straight from the metadata bytes (through the cached
    // schema). A frame that does not fit goes the full way below, which names what is wrong.
    for (const Tensor& t : frame.tensors) make_received_ready(call, t);
    const Allocator& empty = call.rank().allocator();  // tensors without elements
    std::optional<TensorDict> dict = cached ? schemas->read_dict(frame.metadata, frame.tensors, empty)
                                            : decode_plain_dict(frame.metadata, frame.tensors, empty);
    if (dict) {
      frame.tensors.clear();
      return std::move(*dict);
    }
  }
  Result<Metadata> decoded =
      cached ? schemas->metadata(frame.metadata) : decode_metadata(frame.metadata);
  if (!decoded)
    throw Error(decoded.error().code() == Errc::mismatch ? Errc::mismatch : Errc::malformed,
                call.where() + ": metadata from " + call.who(src) +
                    " does not decode: " + decoded.error().what());
  return rebuild_from_metadata(call, src, frame, std::move(decoded.value()), all_gather_group,
                               overrides, into);
}

}  // namespace rankmesh
