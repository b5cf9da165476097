#include "rankmesh/group_coordinator.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "op_code.hpp"
#include "rank_context.hpp"
#include "codec.hpp"
#include "rankmesh/device_backend.hpp"
#include "rankmesh/error.hpp"
#include "reduce.hpp"
#include "tensor_ops.hpp"

namespace rankmesh {
namespace {

std::string key_of(const std::vector<std::string>& path) {
  std::string key;
  for (const auto& part : path) {
    if (!key.empty()) key += '.';
    key += part;
  }
  return key;
}

std::string ms(std::chrono::nanoseconds d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

const std::byte* bytes_of(const Tensor& t) { return static_cast<const std::byte*>(t.data()); }
std::byte* bytes_of(Tensor& t) { return static_cast<std::byte*>(t.data()); }

}  // namespace

// The body of every operation: matching, sequence numbers and the collective algorithms.
// One GroupOps lives for one call; it holds the call's deadline and name for error messages.
class GroupOps {
public:
  GroupOps(GroupCoordinator& g, const char* op)
      : g_(g), ctx_(*g.context_), op_(op), deadline_(deadline_after(g.timeout_)) {
    ctx_.drain(deadline_);
#ifndef NDEBUG
    const std::thread::id self = std::this_thread::get_id();
    std::thread::id none{};
    if (g_.user_.compare_exchange_strong(none, self)) {
      guarded_ = true;
    } else if (none != self) {  // the same thread nested (send-allgather on this group) is fine
      throw Error(Errc::invalid_argument, g_.name_ + ": " + op_ +
                                              " called while another thread is inside this "
                                              "GroupCoordinator; use one coordinator from one "
                                              "thread at a time");
    }
#endif
  }
  ~GroupOps() {
    if (guarded_) g_.user_.store(std::thread::id{});
  }
  GroupOps(const GroupOps&) = delete;
  GroupOps& operator=(const GroupOps&) = delete;

  GroupCoordinator& g() { return g_; }
  Deadline deadline() const { return deadline_; }
  RankContext& ctx() { return ctx_; }
  int me() const { return g_.rank_in_group_; }
  int n() const { return g_.world_size(); }
  Frame& frame() { return ctx_.scratch(); }

  std::string who(int group_rank) const {
    return "group rank " + std::to_string(group_rank) + " (rank " +
           std::to_string(g_.ranks_[static_cast<std::size_t>(group_rank)]) + ")";
  }
  std::string where() const { return g_.name_ + " " + who(me()) + " " + op_; }

  int check_peer(int group_rank, const char* role) const {
    if (group_rank < 0 || group_rank >= n())
      throw Error(Errc::invalid_argument, where() + ": " + role + " " + std::to_string(group_rank) +
                                              " is outside the group of " + std::to_string(n()));
    return group_rank;
  }
  int check_other_peer(int group_rank, const char* role) const {
    check_peer(group_rank, role);
    if (group_rank == me())
      throw Error(Errc::invalid_argument, where() + ": " + role + " is this rank itself");
    return group_rank;
  }

  // --- point-to-point: FIFO per (group, src, dst), numbered per peer. A number stands for one
  // send or receive call, whatever becomes of it, as a collective's number does: the k-th send
  // to a peer pairs with that peer's k-th receive. A receive that times out uses up its number
  // (its message, if it ever comes, is discarded); so does a send that fails, and the receive
  // paired with it either timed out as well or finds the gap and says so. Neither side's
  // failure shifts which message a later receive gets. Only a send refused for its arguments
  // before anything left (invalid_argument, limit_exceeded) gives its number back: the caller
  // learns at once that it was never made, and the receiver never waited for it.
  template <class Send>
  void numbered_send(int dst, Send&& send) {
    auto& next = g_.send_seq_[static_cast<std::size_t>(dst)];
    const std::uint64_t seq = next++;
    try {
      send(seq);
    } catch (const Error& e) {
      if (e.code() == Errc::invalid_argument || e.code() == Errc::limit_exceeded) --next;
      throw;
    }
  }

  void send_p2p(int dst, OpCode op, std::uint64_t seq, Frame& f) {
    f.header = FrameHeader{g_.group_id_, static_cast<std::uint32_t>(op), seq, ctx_.rank()};
    note(f, dst, true);
    ctx_.send(g_.ranks_[static_cast<std::size_t>(dst)], f, deadline_, describe_);
  }

  void recv_p2p(int src, OpCode op, Frame& f) {
    auto& next = g_.recv_seq_[static_cast<std::size_t>(src)];
    const std::uint64_t expected = next++;
    const int from = g_.ranks_[static_cast<std::size_t>(src)];
    while (true) {
      if (!ctx_.recv(from, g_.group_id_, false, f, deadline_, describe_))
        throw ctx_.reported(Error(Errc::timeout, where() + " waited " + ms(g_.timeout_) + " for " +
                                       op_name(static_cast<std::uint32_t>(op)) + " #" +
                                       std::to_string(expected) + " from " + who(src) +
                                       ", which did not come"));
      if (f.header.seq < expected) continue;  // late: its receive timed out, discard
      if (f.header.seq > expected) {
        // The sender's calls #expected .. #seq-1 failed before their message left: this receive
        // has none. The message that came is kept for the next receive.
        const std::uint64_t got = f.header.seq;
        next = got;
        ctx_.put_back(from, std::move(f));
        f = Frame{};
        throw ctx_.reported(Error(
            Errc::mismatch, where() + " expected " + op_name(static_cast<std::uint32_t>(op)) +
                                " #" + std::to_string(expected) + " from " + who(src) +
                                ", whose send" +
                                (got - expected > 1 ? "s #" + std::to_string(expected) + "..#" +
                                                          std::to_string(got - 1)
                                                    : " #" + std::to_string(expected)) +
                                " failed there, so nothing came for this receive; its next "
                                "message, #" + std::to_string(got) +
                                ", is left for the next receive"));
      }
      note(f, src, false);
      if (f.header.op != static_cast<std::uint32_t>(op)) throw mismatch(src, op, expected, f.header);
      return;
    }
  }

  // --- collectives: every frame carries the group's collective sequence number.
  std::uint64_t begin_collective() { return g_.collective_seq_++; }

  void send_coll(int dst, OpCode op, std::uint64_t seq, Frame& f) {
    f.header = FrameHeader{g_.group_id_, static_cast<std::uint32_t>(op), seq, ctx_.rank()};
    note(f, dst, true);
    ctx_.send(g_.ranks_[static_cast<std::size_t>(dst)], f, deadline_, describe_);
  }

  // `alternative`: a second operation this receive accepts (broadcast_object's ring set-up).
  // `landing`: where this frame's payloads should go (see Landing).
  void recv_coll(int src, OpCode op, std::uint64_t seq, Frame& f,
                 std::optional<OpCode> alternative = std::nullopt,
                 const Landing* landing = nullptr) {
    while (true) {
      if (!ctx_.recv(g_.ranks_[static_cast<std::size_t>(src)], g_.group_id_, true, f, deadline_,
                     describe_, landing))
        throw ctx_.reported(Error(Errc::timeout, where() + " #" + std::to_string(seq) + " waited " +
                                                     ms(g_.timeout_) + " for " + who(src) +
                                                     ", which did not send its part"));
      if (f.header.seq < seq) {  // from a collective that timed out here: discard, but
        // a ring announcement is kept (broadcast_object attaches late) and ends its wait.
        if (keep_ring_announcement(src, f) && alternative == OpCode::broadcast_ring) return;
        continue;
      }
      note(f, src, false);
      const bool expected_op = f.header.op == static_cast<std::uint32_t>(op) ||
                               (alternative && f.header.op == static_cast<std::uint32_t>(*alternative));
      if (f.header.seq != seq || !expected_op) throw mismatch(src, op, seq, f.header);
      return;
    }
  }

  // broadcast_object's: true when `f` announces `src`'s broadcast ring, which it then keeps.
  bool keep_ring_announcement(int src, Frame& f);

  void note(const Frame& f, int group_rank, bool sent) {
    std::size_t bytes = 0;
    for (const Tensor& t : f.tensors) bytes += t.nbytes();
    ctx_.record(f.header.op, g_.name_, g_.ranks_[static_cast<std::size_t>(group_rank)], sent,
                f.header.seq, bytes);
  }

  Error mismatch(int src, OpCode op, std::uint64_t seq, const FrameHeader& got) const {
    return Error(Errc::mismatch, g_.name_ + ": " + who(me()) + " expected " +
                                     op_name(static_cast<std::uint32_t>(op)) + " #" +
                                     std::to_string(seq) + " from " + who(src) + ", which sent " +
                                     op_name(got.op) + " #" + std::to_string(got.seq) +
                                     " (operations issued in a different order on each side)");
  }

  // A payload that does not fit what this rank expects: the ranks passed different tensors.
  Error payload_mismatch(int src, const Tensor& got, const std::string& expected) const {
    return Error(Errc::mismatch, where() + ": " + who(src) + " sent " + to_string(got.shape()) +
                                     " " + to_string(got.dtype()) + ", expected " + expected);
  }

  std::chrono::nanoseconds left() const {
    return std::max(std::chrono::nanoseconds::zero(),
                    std::chrono::duration_cast<std::chrono::nanoseconds>(deadline_ - Clock::now()));
  }

  // A copy for a peer, which may then keep it. Host bytes that are ready are copied at once;
  // otherwise the copy runs on this rank's stream once the tensor's ready event completes (send
  // never blocks on it), and the caller's current stream waits for that copy before later work
  // may overwrite the tensor.
  Tensor copy_of(const Tensor& t) {
    const auto& ready = t.ready_event();
    if (t.device().type == DeviceType::cpu && (!ready || ready->query())) {
      Tensor out = ctx_.allocate(t.shape(), t.dtype());
      if (t.nbytes()) std::memcpy(out.data(), t.data(), t.nbytes());
      return out;
    }
    DeviceBackend& backend = ctx_.backend_for(t.device());
    Tensor out = t.device().type == DeviceType::cpu ? ctx_.allocate(t.shape(), t.dtype())
                                                    : backend.allocate(t.shape(), t.dtype());
    backend.copy(t, out, ctx_.stream_for(t.device()));
    current_stream(backend).wait(*out.ready_event());
    return out;
  }

  // A ready host tensor that the channel to `dst` copies before send() returns needs no copy
  // to keep the caller's tensor safe from the transfer (small payloads over shm).
  bool copied_on_send(const Tensor& t, int dst) const {
    const auto& ready = t.ready_event();
    return t.device().type == DeviceType::cpu && (!ready || ready->query()) &&
           !ctx_.traits_to(g_.ranks_[static_cast<std::size_t>(dst)]).reads_after_send(t.nbytes());
  }

  // Collectives compute on the host: their inputs must be host tensors whose bytes are ready.
  void host_ready(const Tensor& t) {
    if (!t.defined()) throw Error(Errc::invalid_argument, where() + ": undefined tensor");
    if (t.device().type != DeviceType::cpu)
      throw Error(Errc::invalid_argument, where() + " computes on host tensors, got one on " +
                                              to_string(t.device()));
    if (const auto& ready = t.ready_event(); ready && !ready->query()) ready->synchronize(left());
  }

  // A received tensor: host bytes are made ready before the call returns (the engine may read
  // them at once); a device tensor's event is handed to the caller's current stream instead.
  void settle(const Tensor& t) {
    const auto& ready = t.ready_event();
    if (!ready || ready->query()) return;
    if (t.device().type == DeviceType::cpu) {
      ready->synchronize(left());
    } else {
      current_stream(ctx_.backend_for(t.device())).wait(*ready);
    }
  }

  // A fresh 1-D tensor of `count` elements of `t` starting at element `start`.
  Tensor flat_slice(const Tensor& t, std::int64_t start, std::int64_t count) {
    host_ready(t);
    Tensor out = ctx_.allocate(Shape{count}, t.dtype());
    const std::size_t size = dtype_size(t.dtype());
    if (count) std::memcpy(out.data(), bytes_of(t) + static_cast<std::size_t>(start) * size,
                           static_cast<std::size_t>(count) * size);
    return out;
  }

  Tensor only_tensor(int src, Frame& f) {
    if (f.tensors.size() != 1)
      throw Error(Errc::malformed, where() + ": " + who(src) + " sent " +
                                       std::to_string(f.tensors.size()) + " tensors, expected 1");
    Tensor t = std::move(f.tensors.front());
    f.tensors.clear();
    settle(t);
    return t;
  }

  // send-allgather. The per-key map decides where slicing is allowed (true: always sliced,
  // false: never); a key it does not list may travel as a slice when its element count divides
  // by the all-gather group's size, and the sender chooses (slice_pays()). The receiver follows
  // what the metadata says, after checking that its own settings allow it.
  static std::optional<bool> forced(const AllGatherTensors& overrides, const std::string& key) {
    if (auto it = overrides.find(key); it != overrides.end()) return it->second;
    return std::nullopt;
  }
  static bool may_slice(const GroupCoordinator* group, const AllGatherTensors& overrides,
                        const std::string& key, std::int64_t numel) {
    if (group == nullptr || group->world_size() == 1 || numel == 0) return false;
    const std::optional<bool> rule = forced(overrides, key);
    return rule ? *rule : numel % group->world_size() == 0;
  }

  // Slicing sends 1/n of the bytes to the peer and then all-gathers them among the receivers:
  // it pays where the link to the peer is the slow one — the peer on another node while the
  // all-gather group shares this rank's node — and for payloads large enough that the extra
  // collective's latency does not dominate. On one node every link is as fast as the others and
  // sending whole moves no more bytes with one step less (measured: scripts/bench.sh, (c)).
  // The receivers all-gather together, so every sender of the group must choose alike; but on
  // mixed topologies one member's peer shares its node while another's does not. So the choice
  // rests only on what the members share: the tensor's size, whether the all-gather group lies
  // on one node, and whether any member's link leaves it (agreed once, see below).
  static constexpr std::size_t kMinSlicedBytes = std::size_t{1} << 20;
  bool slice_pays(bool links_leave_node, std::size_t nbytes) const {
    return links_leave_node && nbytes >= kMinSlicedBytes;
  }
  bool on_one_node(const GroupCoordinator& group) const {
    for (int member : group.ranks_)
      if (!ctx_.same_node(member)) return false;
    return true;
  }
  // Whether, for the members of `ag` sending to group rank `to` of their p2p groups, any link
  // leaves the node: asked once per (all-gather group, destination) with a one-element
  // all_reduce on `ag` — every member sends at the same step, so all of them ask together —
  // and remembered. False without asking where `ag` does not lie on one node (slicing never
  // pays there), which every member sees alike.
  bool links_leave_node(GroupCoordinator* ag, int to) {
    if (ag == nullptr || ag->world_size() == 1 || !on_one_node(*ag)) return false;
    const auto key = std::make_pair(ag->group_id_, to);
    if (auto known = g_.links_leave_node_.find(key); known != g_.links_leave_node_.end())
      return known->second;
    Tensor leaves = ctx_.allocate(Shape{1}, DType::i32);
    *leaves.data_as<std::int32_t>() = ctx_.same_node(global(to)) ? 0 : 1;
    const bool any = *ag->all_reduce(leaves, ReduceOp::max).data_as<std::int32_t>() != 0;
    g_.links_leave_node_.emplace(key, any);
    return any;
  }

  void send_dict(const TensorDict& dict, bool donate, std::optional<int> dst,
                 GroupCoordinator* ag, const AllGatherTensors& overrides) {
    const int to = check_other_peer(dst.value_or(g_.next_rank_in_group()), "dst");
    numbered_send(to, [&](std::uint64_t seq) { send_dict_to(to, seq, dict, donate, ag, overrides); });
  }

  void send_dict_to(int to, std::uint64_t seq, const TensorDict& dict, bool donate,
                    GroupCoordinator* ag, const AllGatherTensors& overrides) {
    SplitDict parts = split(dict);
    const bool leaves_node = links_leave_node(ag, to);  // before the frame: it may talk on `ag`
    Frame& f = frame();
    f.tensors.clear();
    std::size_t index = 0;
    for (MetaEntry& entry : parts.metadata.entries) {
      if (entry.kind != MetaEntry::Kind::tensor) continue;
      Tensor& t = parts.tensors[index++];
      const std::int64_t numel = t.numel();
      if (numel == 0) continue;  // empty tensors are never sent; their shape is in the metadata
      // The key is spelled out only where a per-key rule may apply (not per message otherwise).
      const std::string key = ag != nullptr ? key_of(entry.path) : std::string();
      entry.tensor.sliced = may_slice(ag, overrides, key, numel) &&
                            (forced(overrides, key).value_or(false) || slice_pays(leaves_node, t.nbytes()));
      if (entry.tensor.sliced) {
        if (numel % ag->world_size() != 0)
          throw Error(Errc::invalid_argument,
                      where() + ": '" + key + "' has " + std::to_string(numel) +
                          " elements, which do not split into " +
                          std::to_string(ag->world_size()) + " slices of " + ag->unique_name());
        const std::int64_t per = numel / ag->world_size();
        f.tensors.push_back(flat_slice(t, per * ag->rank_in_group(), per));
      } else {
        f.tensors.push_back(donate || copied_on_send(t, to) ? std::move(t) : copy_of(t));
      }
    }
    encode(parts.metadata, f.metadata);
    send_p2p(to, OpCode::tensor_dict, seq, f);
  }

  // Rebuilds a dict from a received frame: checks each payload against the metadata, undoes
  // send-allgather slicing, and lands tensors in the caller's buffers where given.
  TensorDict assemble(int src, Frame& f, GroupCoordinator* ag,
                      const AllGatherTensors& overrides, const RecvInto& into) {
    Result<Metadata> decoded = decode_metadata(f.metadata);
    if (!decoded)
      throw Error(Errc::malformed, where() + ": metadata from " + who(src) +
                                       " does not decode: " + decoded.error().what());
    Metadata& metadata = decoded.value();
    // Undoing a slice runs an all-gather, which reuses the rank's scratch frame: hold the
    // payloads apart (swapped, so the frame's capacity comes back afterwards).
    std::vector<Tensor> payloads;
    payloads.swap(f.tensors);
    std::vector<Tensor> tensors;
    tensors.reserve(payloads.size());
    std::size_t next_payload = 0;
    for (const MetaEntry& entry : metadata.entries) {
      if (entry.kind != MetaEntry::Kind::tensor) continue;
      const TensorMeta& meta = entry.tensor;
      const std::string key =
          ag != nullptr || !overrides.empty() || !into.empty() ? key_of(entry.path) : std::string();
      const std::int64_t numel = meta.shape.numel();
      Tensor t;
      if (numel != 0) {
        if (next_payload >= payloads.size())
          throw Error(Errc::malformed, where() + ": " + who(src) + " sent fewer payloads than " +
                                           "its metadata lists (missing '" + key_of(entry.path) + "')");
        t = std::move(payloads[next_payload++]);
        settle(t);
        const bool allowed = meta.sliced ? may_slice(ag, overrides, key, numel)
                                         : !forced(overrides, key).value_or(false) ||
                                               !may_slice(ag, overrides, key, numel);
        if (!allowed)
          throw Error(Errc::mismatch,
                      where() + ": '" + key_of(entry.path) + "' from " + who(src) + " travels " +
                          (meta.sliced ? "as a slice" : "whole") + ", but this receiver's " +
                          "all-gather group and all_gather_tensors say it must travel " +
                          (meta.sliced ? "whole" : "as a slice") +
                          "; sender and receiver must pass the same all-gather settings");
        if (meta.sliced) {
          if (t.dtype() != meta.dtype || t.numel() * ag->world_size() != numel)
            throw payload_mismatch(src, t, "a slice of " + to_string(meta.shape) + " " +
                                               to_string(meta.dtype));
          t = ag->all_gather(t, 0).view(meta.shape);
        } else if (t.dtype() != meta.dtype || !(t.shape() == meta.shape)) {
          throw payload_mismatch(src, t, to_string(meta.shape) + " " + to_string(meta.dtype));
        }
      }
      if (auto it = into.empty() ? into.end() : into.find(key); it != into.end()) {
        const Tensor& dest = it->second;
        if (!dest.defined() || dest.dtype() != meta.dtype || !(dest.shape() == meta.shape))
          throw Error(Errc::invalid_argument,
                      where() + ": the buffer given for '" + key + "' is " +
                          (dest.defined() ? to_string(dest.shape()) + " " + to_string(dest.dtype())
                                          : std::string("undefined")) +
                          ", but the metadata from " + who(src) + " says " +
                          to_string(meta.shape) + " " + to_string(meta.dtype));
        if (numel != 0) land(t, dest);
        t = dest;
      } else if (numel == 0) {
        t = ctx_.allocate(meta.shape, meta.dtype);
      }
      tensors.push_back(std::move(t));
    }
    if (next_payload != payloads.size())
      throw Error(Errc::malformed, where() + ": " + who(src) + " sent " +
                                       std::to_string(payloads.size()) +
                                       " payloads, its metadata lists " +
                                       std::to_string(next_payload));
    payloads.clear();
    f.tensors.swap(payloads);
    return join(std::move(metadata), std::move(tensors));
  }

  // Copies a received tensor into the caller's buffer, through the buffer's device.
  void land(const Tensor& t, const Tensor& dest) {
    if (t.device() == dest.device() && dest.device().type == DeviceType::cpu &&
        (!dest.ready_event() || dest.ready_event()->query())) {
      std::memcpy(dest.data(), t.data(), dest.nbytes());
      return;
    }
    if (!(t.device() == dest.device()))
      throw Error(Errc::invalid_argument, where() + ": cannot land a tensor from " +
                                              to_string(t.device()) + " in a buffer on " +
                                              to_string(dest.device()));
    DeviceBackend& backend = ctx_.backend_for(dest.device());
    Tensor target = dest;
    backend.copy(t, target, ctx_.stream_for(dest.device()));
    settle(target);
  }

  // Element bounds of rank j's chunk when `numel` elements are split n ways.
  static std::int64_t chunk_start(std::int64_t numel, int n, int j) { return numel * j / n; }

  // Reduce-scatter by owner, then all-gather: each owner adds its chunk in ascending group-rank
  // order, so the result equals a one-rank reference element by element.
  Tensor all_reduce(const Tensor& input, ReduceOp op) {
    check_reducible(input.dtype(), op);
    host_ready(input);
    if (n() == 1) return copy_of(input);
    const std::uint64_t seq = begin_collective();
    const std::int64_t numel = input.numel();
    const std::size_t elem = dtype_size(input.dtype());
    auto start = [&](int j) { return chunk_start(numel, n(), j); };
    auto length = [&](int j) { return start(j + 1) - start(j); };
    Frame& f = frame();
    for (int j = 0; j < n(); ++j) {
      if (j == me()) continue;
      f.metadata.clear();
      f.tensors.assign(1, flat_slice(input, start(j), length(j)));
      send_coll(j, OpCode::all_reduce, seq, f);
    }
    std::vector<Tensor> parts(static_cast<std::size_t>(n()));
    std::vector<const void*> inputs(static_cast<std::size_t>(n()));
    for (int j = 0; j < n(); ++j) {
      if (j == me()) {
        inputs[static_cast<std::size_t>(j)] = bytes_of(input) + static_cast<std::size_t>(start(me())) * elem;
        continue;
      }
      recv_coll(j, OpCode::all_reduce, seq, f);
      Tensor part = only_tensor(j, f);
      if (part.dtype() != input.dtype() || part.numel() != length(me()))
        throw payload_mismatch(j, part, std::to_string(length(me())) + " elements of " +
                                            to_string(input.dtype()) + " (ranks passed different tensors)");
      inputs[static_cast<std::size_t>(j)] = part.data();
      parts[static_cast<std::size_t>(j)] = std::move(part);
    }
    Tensor mine = ctx_.allocate(Shape{length(me())}, input.dtype());
    reduce_many(inputs, mine.data(), static_cast<std::size_t>(length(me())), input.dtype(), op);

    Tensor out = ctx_.allocate(input.shape(), input.dtype());
    std::memcpy(bytes_of(out) + static_cast<std::size_t>(start(me())) * elem, mine.data(), mine.nbytes());
    for (int j = 0; j < n(); ++j) {
      if (j == me()) continue;
      f.metadata.clear();
      f.tensors.assign(1, mine);  // shared read-only by every peer; nobody writes it again
      send_coll(j, OpCode::all_reduce, seq, f);
    }
    for (int j = 0; j < n(); ++j) {
      if (j == me()) continue;
      recv_coll(j, OpCode::all_reduce, seq, f);
      Tensor part = only_tensor(j, f);
      if (part.dtype() != input.dtype() || part.numel() != length(j))
        throw payload_mismatch(j, part, std::to_string(length(j)) + " elements");
      std::memcpy(bytes_of(out) + static_cast<std::size_t>(start(j)) * elem, part.data(), part.nbytes());
    }
    return out;
  }

  // The caller's tensor, lent to the channels of the peers it was sent to (exchange's direct
  // path). However the operation ends, no peer may read it afterwards, when the caller may
  // already be changing it: each channel has either let go of it or is closed, so that its
  // peer's receive fails instead of returning bytes that mix old and new.
  class LentInput {
  public:
    LentInput(GroupOps& ops, bool direct) : ops_(ops), direct_(direct) {}
    LentInput(const LentInput&) = delete;
    LentInput& operator=(const LentInput&) = delete;
    // Peers are lent the input in ascending group-rank order.
    void lend_to(int j) {
      if (direct_) lent_end_ = j + 1;
    }
    // Waits until the peers' channels have let go of it; throws like RankContext::release.
    void take_back() {
      for (; released_end_ < lent_end_; ++released_end_)
        if (released_end_ != ops_.me())
          ops_.ctx_.release(ops_.global(released_end_), ops_.deadline_, ops_.describe_);
    }
    ~LentInput() {
      for (int j = released_end_; j < lent_end_; ++j) {
        const int peer = ops_.global(j);
        if (j == ops_.me() || ops_.ctx_.released(peer)) continue;
        try {
          ops_.ctx_.close_channel_to(
              peer, ops_.where() + " failed while rank " + std::to_string(peer) +
                        " could still read its input, which the caller may change from now on; "
                        "the channel is closed so that rank " + std::to_string(peer) +
                        " fails instead");
        } catch (...) {
          // A channel that cannot even close is already closed: nobody reads through it.
        }
      }
    }

  private:
    GroupOps& ops_;
    const bool direct_;
    int lent_end_ = 0;      // group ranks below this one were lent the input (this rank aside)
    int released_end_ = 0;  // ... and those below this one have let go of it
  };

  int global(int group_rank) const { return g_.ranks_[static_cast<std::size_t>(group_rank)]; }

  // Sends `mine` to every peer and returns every member's tensor in group-rank order. With
  // `slots` (one per member), each peer's tensor is read straight into its slot where the
  // transport allows and it fits; the caller checks which ones landed.
  std::vector<Tensor> exchange(const Tensor& mine, OpCode op,
                               const std::vector<Tensor>* slots = nullptr) {
    const std::uint64_t seq = begin_collective();
    Frame& f = frame();
    // The caller may reuse `mine` once this returns. Where every peer's channel can release
    // what it holds (shm, tcp), peers read `mine` itself and the channels are released before
    // returning; otherwise (inproc peers keep what they get) one copy serves every peer.
    const auto& ready = mine.ready_event();
    bool direct = mine.device().type == DeviceType::cpu && (!ready || ready->query());
    for (int j = 0; j < n() && direct; ++j)
      direct = j == me() || ctx_.traits_to(global(j)).lends();
    Tensor shared = n() > 1 && !direct ? copy_of(mine) : mine;
    LentInput lent(*this, direct);
    for (int j = 0; j < n(); ++j) {
      if (j == me()) continue;
      f.metadata.clear();
      f.tensors.assign(1, shared);
      lent.lend_to(j);
      send_coll(j, op, seq, f);
    }
    std::vector<Tensor> all(static_cast<std::size_t>(n()));
    all[static_cast<std::size_t>(me())] = mine;
    Landing landing{g_.group_id_, static_cast<std::uint32_t>(op), seq, {}};
    for (int j = 0; j < n(); ++j) {
      if (j == me()) continue;
      if (slots != nullptr) landing.tensors.assign(1, (*slots)[static_cast<std::size_t>(j)]);
      recv_coll(j, op, seq, f, std::nullopt, slots != nullptr ? &landing : nullptr);
      all[static_cast<std::size_t>(j)] = only_tensor(j, f);
    }
    lent.take_back();
    return all;
  }

  // Rows of dim `dim` other than `dim` itself and the dtype must agree.
  void check_compatible(int src, const Tensor& got, const Tensor& mine, int dim, bool same_rows) {
    bool ok = got.dtype() == mine.dtype() && got.shape().rank() == mine.shape().rank();
    for (int i = 0; ok && i < mine.shape().rank(); ++i)
      ok = (i == dim && !same_rows) || got.shape()[i] == mine.shape()[i];
    if (!ok)
      throw payload_mismatch(src, got, to_string(mine.shape()) + " " + to_string(mine.dtype()) +
                                           (same_rows ? "" : " (any size along dim " +
                                                                 std::to_string(dim) + ")"));
  }

  Tensor all_gather(const Tensor& input, int dim, bool same_rows, OpCode op) {
    host_ready(input);
    check_dim(input, dim, op_);
    if (dim == 0 && same_rows && n() > 1) return all_gather_rows(input, op);
    std::vector<Tensor> all = exchange(input, op);
    for (int j = 0; j < n(); ++j)
      if (j != me()) check_compatible(j, all[static_cast<std::size_t>(j)], input, dim, same_rows);
    return concat(all, dim, ctx_.allocator());
  }

  // Along dim 0 every member's part is one contiguous block of the result: the parts are read
  // straight into their blocks (shm, tcp), so the result costs no gathering copy.
  Tensor all_gather_rows(const Tensor& input, OpCode op) {
    Shape shape;
    shape.push_back(input.shape()[0] * n());
    for (int i = 1; i < input.shape().rank(); ++i) shape.push_back(input.shape()[i]);
    Tensor out = ctx_.allocate(shape, input.dtype());
    const std::size_t block = input.nbytes();
    std::vector<Tensor> slots(static_cast<std::size_t>(n()));
    for (int j = 0; j < n(); ++j) {
      std::byte* at = bytes_of(out) + static_cast<std::size_t>(j) * block;
      slots[static_cast<std::size_t>(j)] =
          Tensor::wrap(block != 0 ? at : nullptr, input.shape(), input.dtype(), Device{},
                       [keep = out](void*) {});
    }
    std::vector<Tensor> all = exchange(input, op, &slots);
    for (int j = 0; j < n(); ++j) {
      const Tensor& part = all[static_cast<std::size_t>(j)];
      const Tensor& slot = slots[static_cast<std::size_t>(j)];
      if (j != me()) check_compatible(j, part, input, 0, true);
      if (block != 0 && part.data() != slot.data())  // did not land in place (inproc, stashed)
        std::memcpy(slot.data(), part.data(), block);
    }
    return out;
  }

  Tensor reduce_scatterv(const Tensor& input, std::span<const std::int64_t> sizes, int dim,
                         ReduceOp op, OpCode code) {
    check_reducible(input.dtype(), op);
    host_ready(input);
    check_dim(input, dim, op_);
    if (static_cast<int>(sizes.size()) != n())
      throw Error(Errc::invalid_argument, where() + ": " + std::to_string(sizes.size()) +
                                              " sizes for a group of " + std::to_string(n()));
    std::vector<std::int64_t> offsets(sizes.size() + 1, 0);
    for (std::size_t j = 0; j < sizes.size(); ++j) {
      if (sizes[j] < 0) throw Error(Errc::invalid_argument, where() + ": negative size");
      offsets[j + 1] = offsets[j] + sizes[j];
    }
    if (offsets.back() != input.shape()[dim])
      throw Error(Errc::invalid_argument, where() + ": sizes sum to " +
                                              std::to_string(offsets.back()) + ", dim " +
                                              std::to_string(dim) + " of " +
                                              to_string(input.shape()) + " has " +
                                              std::to_string(input.shape()[dim]));
    const std::uint64_t seq = begin_collective();
    auto mine_of = [&](int j) {
      return narrow(input, dim, offsets[static_cast<std::size_t>(j)], sizes[static_cast<std::size_t>(j)],
                    ctx_.allocator());
    };
    Frame& f = frame();
    for (int j = 0; j < n(); ++j) {
      if (j == me()) continue;
      f.metadata.clear();
      f.tensors.assign(1, mine_of(j));
      send_coll(j, code, seq, f);
    }
    std::vector<Tensor> parts(static_cast<std::size_t>(n()));
    std::vector<const void*> inputs(static_cast<std::size_t>(n()));
    parts[static_cast<std::size_t>(me())] = mine_of(me());
    const Tensor& own = parts[static_cast<std::size_t>(me())];
    for (int j = 0; j < n(); ++j) {
      if (j != me()) {
        recv_coll(j, code, seq, f);
        parts[static_cast<std::size_t>(j)] = only_tensor(j, f);
        const Tensor& got = parts[static_cast<std::size_t>(j)];
        if (got.dtype() != own.dtype() || !(got.shape() == own.shape()))
          throw payload_mismatch(j, got, to_string(own.shape()) + " " + to_string(own.dtype()));
      }
      inputs[static_cast<std::size_t>(j)] = parts[static_cast<std::size_t>(j)].data();
    }
    Tensor out = ctx_.allocate(own.shape(), own.dtype());
    reduce_many(inputs, out.data(), static_cast<std::size_t>(own.numel()), own.dtype(), op);
    return out;
  }

private:
  GroupCoordinator& g_;
  RankContext& ctx_;
  const char* op_;
  Deadline deadline_;
  RankContext::Describe describe_ = [this] { return where(); };  // small: no allocation
  bool guarded_ = false;
};

GroupCoordinator::GroupCoordinator(std::shared_ptr<RankContext> rank, GroupKind kind,
                                   int group_index, Group ranks)
    : context_(std::move(rank)), kind_(kind), group_index_(group_index),
      group_id_(RankContext::group_id(kind, group_index,
                                      kind == GroupKind::world ? 0 : context_->layout_epoch())),
      ranks_(std::move(ranks)),
      name_(std::string(to_string(kind)) + ":" + std::to_string(group_index)),
      timeout_(context_->default_timeout()), send_seq_(ranks_.size(), 0),
      recv_seq_(ranks_.size(), 0) {
  auto it = std::find(ranks_.begin(), ranks_.end(), context_->rank());
  if (it == ranks_.end())
    throw Error(Errc::invalid_argument, "rank " + std::to_string(context_->rank()) +
                                            " is not a member of " + name_);
  rank_in_group_ = static_cast<int>(it - ranks_.begin());
}

GroupCoordinator::~GroupCoordinator() = default;

std::string GroupCoordinator::failure() const { return context_->failure(); }

int GroupCoordinator::rank() const noexcept { return context_->rank(); }
int GroupCoordinator::local_rank() const noexcept { return context_->local_rank(); }
int GroupCoordinator::next_rank_in_group() const noexcept { return (rank_in_group_ + 1) % world_size(); }
int GroupCoordinator::prev_rank_in_group() const noexcept {
  return (rank_in_group_ + world_size() - 1) % world_size();
}

GraphCapture GroupCoordinator::graph_capture(std::shared_ptr<Stream> stream) const {
  if (stream) return GraphCapture(std::move(stream));
  return GraphCapture();
}

void GroupCoordinator::send_object(const Value& object, int dst) {
  GroupOps ops(*this, "send_object");
  ops.check_other_peer(dst, "dst");
  ops.numbered_send(dst, [&](std::uint64_t seq) {
    Frame& f = ops.frame();
    encode(object, f.metadata);
    f.tensors.clear();
    ops.send_p2p(dst, OpCode::object, seq, f);
  });
}

Value GroupCoordinator::recv_object(int src) {
  GroupOps ops(*this, "recv_object");
  ops.check_other_peer(src, "src");
  Frame& f = ops.frame();
  ops.recv_p2p(src, OpCode::object, f);
  Result<Value> object = decode_object(f.metadata);
  if (!object)
    throw Error(Errc::malformed, ops.where() + ": object from " + ops.who(src) +
                                     " does not decode: " + object.error().what());
  return std::move(object).value();
}

// broadcast_object towards members on the source's node goes through a shared-memory ring that
// the source writes once and every such member reads (shm_broadcast.hpp); members elsewhere get
// the object over their channel. The source makes its ring on its first broadcast and sends its
// name to each same-node member over the channel, in place of that broadcast's object; that
// object and every later one follow through the ring. Where no ring can be made the source logs
// why and keeps to the channels; a member takes whichever arrives.
//
// An announcement is never lost: one that arrives after the member's broadcast timed out is kept
// by whichever collective receive meets it (GroupOps::keep_ring_announcement), and the member's
// next broadcast_object from that source attaches then, skipping the objects it missed. And a
// source that goes away (destroy_model_parallel) first waits, up to the group's timeout, until
// every reader has attached, so that a reader that comes late can still read what was written.
struct GroupCoordinator::BroadcastRings {
  explicit BroadcastRings(const GroupCoordinator& group) : group(group) {}
  ~BroadcastRings() {
    if (!out || out->wait_attached(deadline_after(group.timeout_))) return;
    group.context_->log(group.name_ + " rank " + std::to_string(group.rank()) +
                        ": not every reader attached to its broadcast ring within " +
                        ms(group.timeout_) + "; it goes away without them");
  }

  const GroupCoordinator& group;
  // As the source: the ring, its readers by group rank, or why there is none.
  std::shared_ptr<ShmBroadcastRing> out;
  std::vector<bool> reads_ring;  // by group rank
  bool out_decided = false;
  // As a member: the rings of the sources that announced one, and announcements not yet
  // attached to (name and reader index, encoded), by group rank.
  std::map<int, std::shared_ptr<ShmBroadcastRing>> in;
  std::map<int, std::vector<std::uint8_t>> announced;
  std::vector<std::uint8_t> encoded;
};

bool GroupOps::keep_ring_announcement(int src, Frame& f) {
  if (f.header.op != static_cast<std::uint32_t>(OpCode::broadcast_ring)) return false;
  if (!g_.rings_) g_.rings_ = std::make_unique<GroupCoordinator::BroadcastRings>(g_);
  // A source announces its ring once; with its ring attached there is nothing to keep.
  if (g_.rings_->in.count(src) == 0) g_.rings_->announced[src] = std::move(f.metadata);
  f.metadata.clear();
  return true;
}

namespace {

template <class Body>
auto through_ring(RankContext& ctx, const std::string& what, Body body) {
  try {
    return body();
  } catch (const ChannelTimeout& e) {
    throw ctx.reported(Error(Errc::timeout, what + ": " + e.what()));
  } catch (const ChannelClosed& e) {
    throw ctx.reported(Error(Errc::peer_failed, what + ": " + e.what()));
  }
}

}  // namespace

Value GroupCoordinator::broadcast_object(const Value& object, int src) {
  GroupOps ops(*this, "broadcast_object");
  ops.check_peer(src, "src");
  if (world_size() == 1) return object;
  if (!rings_) rings_ = std::make_unique<BroadcastRings>(*this);
  BroadcastRings& rings = *rings_;
  const std::uint64_t seq = ops.begin_collective();
  Frame& f = ops.frame();
  RankContext& ctx = *context_;
  if (rank_in_group_ == src) {
    encode(object, rings.encoded);
    if (!rings.out_decided) {
      rings.out_decided = true;
      rings.reads_ring.assign(static_cast<std::size_t>(world_size()), false);
      std::vector<int> readers;
      for (int j = 0; j < world_size(); ++j)
        if (j != src && ctx.shares_memory_with(ranks_[static_cast<std::size_t>(j)]))
          readers.push_back(j);
      std::string name;
      if (!readers.empty()) {
        std::vector<int> global;
        for (int j : readers) global.push_back(ranks_[static_cast<std::size_t>(j)]);
        try {
          rings.out = ctx.create_broadcast_ring(global, name);
        } catch (const std::exception& e) {
          ctx.log(ops.where() + ": no shared-memory ring for broadcast_object (" + e.what() +
                  "); objects go over the channels");
        }
      }
      if (rings.out) {
        for (std::size_t index = 0; index < readers.size(); ++index) {
          const int j = readers[index];
          rings.reads_ring[static_cast<std::size_t>(j)] = true;
          encode(Value(List{Value(name), Value(static_cast<std::int64_t>(index))}), f.metadata);
          f.tensors.clear();
          ops.send_coll(j, OpCode::broadcast_ring, seq, f);
        }
      }
    }
    if (rings.out) {
      through_ring(ctx, ops.where() + " #" + std::to_string(seq), [&] {
        rings.out->write(seq, rings.encoded.data(), rings.encoded.size(), ops.deadline());
      });
      // In the operation history like a send over each reader's channel would be.
      for (int j = 0; j < world_size(); ++j)
        if (rings.reads_ring[static_cast<std::size_t>(j)])
          ctx.record(static_cast<std::uint32_t>(OpCode::broadcast_object), name_,
                     ranks_[static_cast<std::size_t>(j)], true, seq, 0);
    }
    for (int j = 0; j < world_size(); ++j) {
      if (j == src || (rings.out && rings.reads_ring[static_cast<std::size_t>(j)])) continue;
      f.metadata.assign(rings.encoded.begin(), rings.encoded.end());
      f.tensors.clear();
      ops.send_coll(j, OpCode::broadcast_object, seq, f);
    }
    return object;
  }

  auto ring = rings.in.find(src);
  if (ring == rings.in.end() && rings.announced.count(src) == 0) {
    // The object itself, or the announcement of the source's ring (this one's, or a late one
    // of a broadcast that timed out here: then recv_coll returns it, kept in `announced`).
    ops.recv_coll(src, OpCode::broadcast_object, seq, f, OpCode::broadcast_ring);
    if (f.header.op == static_cast<std::uint32_t>(OpCode::broadcast_ring) &&
        rings.announced.count(src) == 0)
      ops.keep_ring_announcement(src, f);
  }
  if (auto announcement = rings.announced.find(src); announcement != rings.announced.end()) {
    Result<Value> announced = decode_object(announcement->second);
    rings.announced.erase(announcement);
    const List* fields = announced && announced.value().is<List>() ? &announced.value().as<List>() : nullptr;
    if (fields == nullptr || fields->size() != 2 || !(*fields)[0].is<std::string>() ||
        !(*fields)[1].is<std::int64_t>())
      throw Error(Errc::malformed, ops.where() + ": " + ops.who(src) +
                                       " announced a broadcast ring in a malformed message");
    const int writer = ranks_[static_cast<std::size_t>(src)];
    try {
      ring = rings.in.emplace(src, ctx.open_broadcast_ring(
                                       (*fields)[0].as<std::string>(),
                                       static_cast<int>((*fields)[1].as<std::int64_t>()), writer))
                 .first;
    } catch (const std::exception& e) {
      throw ctx.reported(Error(Errc::peer_failed, ops.where() + ": cannot attach to the broadcast ring of " +
                                                     ops.who(src) + ": " + e.what()));
    }
  }
  if (ring != rings.in.end()) {
    std::vector<std::uint8_t>& bytes = f.metadata;
    while (true) {
      std::uint64_t tag = 0;
      const bool got = through_ring(ctx, ops.where() + " #" + std::to_string(seq), [&] {
        return ring->second->read(tag, bytes, ops.deadline());
      });
      if (!got)
        throw ctx.reported(Error(Errc::timeout, ops.where() + " #" + std::to_string(seq) +
                                                    " waited " + ms(timeout_) + " for " + ops.who(src) +
                                                    ", which did not broadcast its object"));
      if (tag < seq) continue;  // from a broadcast that timed out here: discard
      if (tag > seq)
        throw Error(Errc::mismatch, ops.where() + ": expected broadcast_object #" + std::to_string(seq) +
                                        " from " + ops.who(src) + ", which broadcast #" +
                                        std::to_string(tag) +
                                        " (collectives issued in a different order on each side)");
      ctx.record(static_cast<std::uint32_t>(OpCode::broadcast_object), name_,
                 ranks_[static_cast<std::size_t>(src)], false, seq, 0);
      break;
    }
  }
  Result<Value> decoded = decode_object(f.metadata);
  if (!decoded)
    throw Error(Errc::malformed, ops.where() + ": object from " + ops.who(src) +
                                     " does not decode: " + decoded.error().what());
  return std::move(decoded).value();
}

void GroupCoordinator::send_tensor_dict(const TensorDict& dict, std::optional<int> dst,
                                        GroupCoordinator* all_gather_group,
                                        const AllGatherTensors& all_gather_tensors) {
  GroupOps ops(*this, "send_tensor_dict");
  ops.send_dict(dict, false, dst, all_gather_group, all_gather_tensors);
}

void GroupCoordinator::send_tensor_dict(TensorDict&& dict, std::optional<int> dst,
                                        GroupCoordinator* all_gather_group,
                                        const AllGatherTensors& all_gather_tensors) {
  GroupOps ops(*this, "send_tensor_dict");
  ops.send_dict(dict, true, dst, all_gather_group, all_gather_tensors);
}

TensorDict GroupCoordinator::recv_tensor_dict(std::optional<int> src,
                                              GroupCoordinator* all_gather_group,
                                              const AllGatherTensors& all_gather_tensors,
                                              const RecvInto& into) {
  GroupOps ops(*this, "recv_tensor_dict");
  const int from = ops.check_other_peer(src.value_or(prev_rank_in_group()), "src");
  Frame& f = ops.frame();
  ops.recv_p2p(from, OpCode::tensor_dict, f);
  return ops.assemble(from, f, all_gather_group, all_gather_tensors, into);
}

TensorDict GroupCoordinator::broadcast_tensor_dict(const TensorDict& dict, int src) {
  GroupOps ops(*this, "broadcast_tensor_dict");
  ops.check_peer(src, "src");
  if (world_size() == 1) return dict;
  const std::uint64_t seq = ops.begin_collective();
  Frame& f = ops.frame();
  if (rank_in_group_ == src) {
    SplitDict parts = split(dict);
    std::vector<std::uint8_t> encoded;
    encode(parts.metadata, encoded);
    for (int j = 0; j < world_size(); ++j) {
      if (j == src) continue;
      f.metadata.assign(encoded.begin(), encoded.end());
      f.tensors.clear();
      for (const Tensor& t : parts.tensors)
        if (t.numel() != 0) f.tensors.push_back(ops.copy_of(t));  // each receiver owns its copy
      ops.send_coll(j, OpCode::broadcast_tensor_dict, seq, f);
    }
    return dict;
  }
  ops.recv_coll(src, OpCode::broadcast_tensor_dict, seq, f);
  return ops.assemble(src, f, nullptr, {}, {});
}

Tensor GroupCoordinator::all_reduce(const Tensor& input, ReduceOp op) {
  GroupOps ops(*this, "all_reduce");
  return ops.all_reduce(input, op);
}

Tensor GroupCoordinator::all_gather(const Tensor& input, int dim) {
  GroupOps ops(*this, "all_gather");
  return ops.all_gather(input, dim, true, OpCode::all_gather);
}

Tensor GroupCoordinator::all_gatherv(const Tensor& input, int dim) {
  GroupOps ops(*this, "all_gatherv");
  return ops.all_gather(input, dim, false, OpCode::all_gatherv);
}

Tensor GroupCoordinator::reduce_scatter(const Tensor& input, int dim, ReduceOp op) {
  GroupOps ops(*this, "reduce_scatter");
  check_dim(input, dim, "reduce_scatter");
  const std::int64_t rows = input.shape()[dim];
  if (rows % world_size() != 0)
    throw Error(Errc::invalid_argument, ops.where() + ": dim " + std::to_string(dim) + " of " +
                                            to_string(input.shape()) + " does not split into " +
                                            std::to_string(world_size()) + " equal parts");
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(world_size()), rows / world_size());
  return ops.reduce_scatterv(input, sizes, dim, op, OpCode::reduce_scatter);
}

Tensor GroupCoordinator::reduce_scatterv(const Tensor& input, std::span<const std::int64_t> sizes,
                                         int dim, ReduceOp op) {
  GroupOps ops(*this, "reduce_scatterv");
  return ops.reduce_scatterv(input, sizes, dim, op, OpCode::reduce_scatterv);
}

Tensor GroupCoordinator::gather(const Tensor& input, int dst, int dim) {
  GroupOps ops(*this, "gather");
  ops.host_ready(input);
  ops.check_peer(dst, "dst");
  check_dim(input, dim, "gather");
  const std::uint64_t seq = ops.begin_collective();
  Frame& f = ops.frame();
  if (rank_in_group_ != dst) {
    f.metadata.clear();
    f.tensors.assign(1, ops.copy_of(input));
    ops.send_coll(dst, OpCode::gather, seq, f);
    return Tensor{};
  }
  std::vector<Tensor> all(static_cast<std::size_t>(world_size()));
  all[static_cast<std::size_t>(dst)] = input;
  for (int j = 0; j < world_size(); ++j) {
    if (j == dst) continue;
    ops.recv_coll(j, OpCode::gather, seq, f);
    all[static_cast<std::size_t>(j)] = ops.only_tensor(j, f);
    ops.check_compatible(j, all[static_cast<std::size_t>(j)], input, dim, true);
  }
  return concat(all, dim, ops.ctx().allocator());
}

Tensor GroupCoordinator::broadcast(const Tensor& input, int src) {
  GroupOps ops(*this, "broadcast");
  ops.check_peer(src, "src");
  if (world_size() == 1) return input;
  const std::uint64_t seq = ops.begin_collective();
  Frame& f = ops.frame();
  if (rank_in_group_ == src) {
    for (int j = 0; j < world_size(); ++j) {
      if (j == src) continue;
      f.metadata.clear();
      f.tensors.assign(1, ops.copy_of(input));  // each receiver owns its copy
      ops.send_coll(j, OpCode::broadcast, seq, f);
    }
    return input;
  }
  ops.recv_coll(src, OpCode::broadcast, seq, f);
  return ops.only_tensor(src, f);
}

void GroupCoordinator::barrier() {
  GroupOps ops(*this, "barrier");
  if (world_size() == 1) return;
  const std::uint64_t seq = ops.begin_collective();
  Frame& f = ops.frame();
  auto signal = [&](int j) {
    f.metadata.clear();
    f.tensors.clear();
    ops.send_coll(j, OpCode::barrier, seq, f);
  };
  // Everyone reports to group rank 0, which releases everyone once all have arrived.
  if (rank_in_group_ != 0) {
    signal(0);
    ops.recv_coll(0, OpCode::barrier, seq, f);
    return;
  }
  for (int j = 1; j < world_size(); ++j) ops.recv_coll(j, OpCode::barrier, seq, f);
  for (int j = 1; j < world_size(); ++j) signal(j);
}

Tensor GroupCoordinator::all_to_all(const Tensor& input, std::span<const std::int64_t> send_counts) {
  GroupOps ops(*this, "all_to_all");
  ops.host_ready(input);
  check_dim(input, 0, "all_to_all");
  if (static_cast<int>(send_counts.size()) != world_size())
    throw Error(Errc::invalid_argument, ops.where() + ": " + std::to_string(send_counts.size()) +
                                            " send counts for a group of " +
                                            std::to_string(world_size()));
  std::vector<std::int64_t> offsets(send_counts.size() + 1, 0);
  for (std::size_t j = 0; j < send_counts.size(); ++j) {
    if (send_counts[j] < 0) throw Error(Errc::invalid_argument, ops.where() + ": negative count");
    offsets[j + 1] = offsets[j] + send_counts[j];
  }
  if (offsets.back() != input.shape()[0])
    throw Error(Errc::invalid_argument, ops.where() + ": send counts sum to " +
                                            std::to_string(offsets.back()) + ", input has " +
                                            std::to_string(input.shape()[0]) + " rows");
  const std::uint64_t seq = ops.begin_collective();
  Frame& f = ops.frame();
  auto rows_for = [&](int j) {
    return narrow(input, 0, offsets[static_cast<std::size_t>(j)], send_counts[static_cast<std::size_t>(j)],
                  ops.ctx().allocator());
  };
  for (int j = 0; j < world_size(); ++j) {
    if (j == rank_in_group_) continue;
    f.metadata.clear();
    f.tensors.assign(1, rows_for(j));
    ops.send_coll(j, OpCode::all_to_all, seq, f);
  }
  std::vector<Tensor> parts(static_cast<std::size_t>(world_size()));
  parts[static_cast<std::size_t>(rank_in_group_)] = rows_for(rank_in_group_);
  for (int j = 0; j < world_size(); ++j) {
    if (j == rank_in_group_) continue;
    ops.recv_coll(j, OpCode::all_to_all, seq, f);
    parts[static_cast<std::size_t>(j)] = ops.only_tensor(j, f);
    ops.check_compatible(j, parts[static_cast<std::size_t>(j)], input, 0, false);
  }
  return concat(parts, 0, ops.ctx().allocator());
}

void GroupCoordinator::submit(std::function<void()> work) { context_->submit(std::move(work)); }

}  // namespace rankmesh
