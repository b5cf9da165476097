// send_tensor_dict / recv_tensor_dict: a tensor dict to one peer, FIFO per (group, src, dst),
// whole or — send-allgather (send_allgather.hpp) — as slices that the receivers all-gather.
//
// The copy rule: a tensor the receiver might read after send() returns must not be the caller's
// own, which the caller may change from then on. So the sender copies it, except where the
// caller donated the dict (the TensorDict&& overload: the receiver may share its memory) or the
// channel copies it before send() returns anyway (copied_on_send).
#include "codec.hpp"
#include "collectives/collectives.hpp"
#include "collectives/send_allgather.hpp"
#include "collectives/tensor_dict_rebuild.hpp"
#include "coordinator/device_ipc.hpp"
#include "coordinator/device_staging.hpp"
#include "coordinator/matcher.hpp"
#include "coordinator/payloads.hpp"
#include "dict_leaves.hpp"
#include "dict_metadata.hpp"

namespace rankmesh::collectives {
namespace {

// Whether a dict's encoding, its payloads included, fits `budget` bytes: an estimate from above
// of what the codec writes (lib/src/metadata_coder.hpp: per leaf its kind, its whole key path,
// then a tensor's description or a value; a frame that defines its schema carries all of it),
// taken off `budget` until it runs out, and no nesting deeper than kMaxDepth. A dict encoded
// over a channel that shares tensors is meant to fit the channel's slot; whether it does or
// not, one that passes here is far below every decoder limit (FrameLimits: bytes, entries,
// depth), so that none of them ever refuses a dict sent within one process.
class EncodedSize {
public:
  explicit EncodedSize(std::size_t budget) : left_(budget) {}

  bool fits(const TensorDict& dict) { return take(kFrame) && fits(dict, 0, 0); }

private:
  static constexpr std::size_t kHead = 9;   // a msgpack head or scalar at most
  static constexpr std::size_t kEntry = 8;  // a leaf's array, kind and path heads
  static constexpr std::size_t kFrame = 24; // the frame's own heads (schema cache, metadata)
  static constexpr int kMaxDepth = 8;       // nesting of dicts and lists; FrameLimits allows 32

  bool take(std::size_t bytes) {
    if (bytes > left_) return false;
    left_ -= bytes;
    return true;
  }

  // `path`: the bytes of the keys above `dict`, written again for every leaf below it. A
  // tensor entry is tested in the loop itself: (a)'s dict spends the budget on its first two
  // entries, and the walk costs its round trip ~65 instructions.
  bool fits(const TensorDict& dict, std::size_t path, int depth) {
    if (depth > kMaxDepth) return false;
    if (dict.empty()) return take(kEntry + path);  // an empty dict is a leaf of its own
    for (const auto& [key, value] : dict) {
      const std::size_t leaf = kEntry + path + key.size() + kHead;
      if (const auto* t = std::get_if<Tensor>(&value.v)) {
        if (!take(leaf + t->nbytes() + 4 * kHead +
                  2 * kHead * static_cast<std::size_t>(t->shape().rank())))
          return false;
      } else if (const auto* nested = std::get_if<TensorDict>(&value.v)) {
        if (!fits(*nested, path + key.size() + kHead, depth + 1)) return false;
      } else if (!take(leaf) || !fits(value, depth)) {
        return false;
      }
    }
    return true;
  }

  // A plain value, or a list's element (a tensor or a dict there is refused by the codec, and
  // by the hand-over alike).
  bool fits(const Value& value, int depth) {
    if (const auto* s = std::get_if<std::string>(&value.v)) return take(s->size() + kHead);
    if (const auto* b = std::get_if<Bytes>(&value.v)) return take(b->size() + kHead);
    if (const auto* list = std::get_if<List>(&value.v)) {
      if (depth + 1 > kMaxDepth || !take(kHead)) return false;
      for (const Value& element : *list)
        if (!fits(element, depth + 1)) return false;
      return true;
    }
    return take(kHead);  // None, bool, int, float; a tensor or dict in a list: refused anyway
  }

  std::size_t left_;
};

// In one process (a channel that shares tensors) the dict itself changes hands: a copy of it,
// whose tensors are those append_payloads() gives the peer (the copy rule above) and whose
// empty tensors are fresh, as a receiver makes them. Nothing is encoded or decoded, so nothing
// is cached either. False, with nothing sent, for a dict the codec refuses (encoding it then
// names what is wrong), one with an empty device tensor (the receiver makes that one on its
// own device), or one small enough to be encoded (ChannelTraits::encodes_dicts_up_to) that was
// not donated (a donated dict's memory changes hands, whatever its size).
bool hand_over_dict(const Call& call, int to, const TensorDict& dict, bool donate, Frame& frame) {
  const ChannelTraits& traits = call.rank().links().traits_to(call.group().global_rank(to));
  if (!traits.shares_tensors) return false;
  // Asked of the caller's dict before it is copied: the walk stops as soon as the budget is
  // spent (two entries of (a)'s dict), and a small dict is not copied only to be encoded.
  if (!donate && EncodedSize(traits.encodes_dicts_up_to).fits(dict)) return false;
  TensorDict& copy = frame.dict.emplace(dict);
  std::vector<Tensor*>& leaves = call.rank().dict_leaves();
  leaves.clear();
  bool plain = DictLeaves::collect(copy, leaves);
  for (const Tensor* t : leaves) plain = plain && (t->numel() != 0 || !on_device(*t));
  if (!plain) {
    frame.dict.reset();
    return false;
  }
  frame.metadata.clear();
  append_payloads(call, leaves, to, donate, frame, nullptr);
  std::size_t next = 0;  // the payloads are the non-empty tensors, in order
  for (Tensor* t : leaves) {
    if (t->numel() == 0) {
      *t = call.rank().allocate(t->shape(), t->dtype());
    } else if (Tensor& payload = frame.tensors[next++]; !donate) {
      *t = payload;
    }
  }
  return true;
}

// Without send-allgather nothing is decided per key: the metadata is written straight from the
// dict through the pair's schema cache, and its tensors go whole. (With send-allgather frames
// travel plain: which keys are sliced is decided per message.)
void send_whole_dict_to(const Call& call, int to, std::uint64_t seq, const TensorDict& dict,
                        bool donate) {
  Frame& frame = call.frame();
  frame.clear_payloads();
  if (hand_over_dict(call, to, dict, donate, frame))
    return send_numbered(call, to, OpCode::tensor_dict, seq, frame);
  std::vector<const Tensor*>& leaves = call.rank().dict_tensors();
  leaves.clear();
  call.group().schemas.to(to).encode(dict, frame.metadata, leaves);
  DeviceExports exports;
  append_payloads(call, leaves, to, donate, frame, &exports);
  exports.finish(frame);
  send_numbered(call, to, OpCode::tensor_dict, seq, frame);
}

void send_dict_to(const Call& call, int to, std::uint64_t seq, const TensorDict& dict, bool donate,
                  GroupState* all_gather_group, const AllGatherTensors& overrides) {
  if (all_gather_group == nullptr) return send_whole_dict_to(call, to, seq, dict, donate);
  SplitDict parts = split(dict);
  // Before the frame is filled: it may run an all_reduce on the all-gather group.
  const bool leaves_node = links_leave_node(call, all_gather_group, to);
  Frame& frame = call.frame();
  frame.clear_payloads();
  DeviceExports exports;
  std::size_t index = 0;
  for (MetaEntry& entry : parts.metadata.entries) {
    if (entry.kind != MetaEntry::Kind::tensor) continue;
    Tensor& t = parts.tensors[index++];
    const std::int64_t numel = t.numel();
    if (numel == 0) continue;  // empty tensors are never sent; their shape is in the metadata
    // The key is spelled out only where a per-key rule may apply (not per message otherwise).
    const std::string key = all_gather_group != nullptr ? dotted_key(entry.path) : std::string();
    entry.tensor.sliced = may_slice(all_gather_group, overrides, key, numel) &&
                          (forced_slicing(overrides, key).value_or(false) ||
                           slice_pays(leaves_node, t.nbytes()));
    if (entry.tensor.sliced) {
      const int slices = all_gather_group->size();
      if (numel % slices != 0)
        throw Error(Errc::invalid_argument,
                    call.where() + ": '" + key + "' has " + std::to_string(numel) +
                        " elements, which do not split into " + std::to_string(slices) +
                        " slices of " + all_gather_group->name);
      const std::int64_t per_slice = numel / slices;
      frame.tensors.push_back(
          flat_slice(call, t, per_slice * all_gather_group->rank_in_group, per_slice));
    } else {
      append_payload(call, t, to, donate, frame, &exports);
    }
  }
  exports.finish(frame);
  encode(parts.metadata, frame.metadata);
  send_numbered(call, to, OpCode::tensor_dict, seq, frame);
}

}  // namespace

void send_tensor_dict(GroupState& group, const TensorDict& dict, bool donate,
                      std::optional<int> dst, GroupState* all_gather_group,
                      const AllGatherTensors& all_gather_tensors) {
  Call call(group, "send_tensor_dict");
  const int next = (group.rank_in_group + 1) % group.size();
  const int to = call.check_other_peer(dst.value_or(next), "dst");
  try {
    send_point_to_point(call, to, [&](std::uint64_t seq) {
      send_dict_to(call, to, seq, dict, donate, all_gather_group, all_gather_tensors);
    });
  } catch (...) {
    // The frame may or may not have left: schemas are defined afresh (schema_cache.hpp).
    group.schemas.to(to).forget();
    throw;
  }
}

TensorDict recv_tensor_dict(GroupState& group, std::optional<int> src, GroupState* all_gather_group,
                            const AllGatherTensors& all_gather_tensors, const RecvInto& into) {
  Call call(group, "recv_tensor_dict");
  const int previous = (group.rank_in_group + group.size() - 1) % group.size();
  const int from = call.check_other_peer(src.value_or(previous), "src");
  Frame& frame = call.frame();
  receive_point_to_point(call, from, OpCode::tensor_dict, frame);
  return rebuild_tensor_dict(call, from, frame, all_gather_group, all_gather_tensors, into);
}

}  // namespace rankmesh::collectives
