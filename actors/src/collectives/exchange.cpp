#include "collectives/exchange.hpp"

#include "coordinator/fan_out.hpp"

namespace rankmesh {
namespace {

// The caller's tensor, lent to the channels of the peers it was sent to. However the operation
// ends, no peer may read it afterwards, when the caller may already be changing it: each
// channel has either let go of it or is closed, so that its peer's receive fails instead of
// returning bytes that mix old and new.
class LentInput {
public:
  LentInput(const Call& call, bool lent) : call_(call), lent_(lent) {}
  LentInput(const LentInput&) = delete;
  LentInput& operator=(const LentInput&) = delete;
  // Peers are lent the input in ascending group-rank order.
  void lend_to(int peer) {
    if (lent_) lent_end_ = peer + 1;
  }
  // Waits until the peers' channels have let go of it; throws like PeerLinks::release.
  void take_back() {
    for (; released_end_ < lent_end_; ++released_end_)
      if (released_end_ != call_.rank_in_group())
        call_.rank().links().release(call_.group().global_rank(released_end_), call_.deadline(),
                                     call_.describe());
  }
  ~LentInput() {
    PeerLinks& links = call_.rank().links();
    for (int member = released_end_; member < lent_end_; ++member) {
      const int peer = call_.group().global_rank(member);
      if (member == call_.rank_in_group() || links.released(peer)) continue;
      try {
        links.close_channel_to(peer, call_.where() + " failed while rank " + std::to_string(peer) +
                                         " could still read its input, which the caller may "
                                         "change from now on; the channel is closed so that "
                                         "rank " + std::to_string(peer) + " fails instead");
      } catch (...) {
        // A channel that cannot even close is already closed: nobody reads through it.
      }
    }
  }

private:
  const Call& call_;
  const bool lent_;
  int lent_end_ = 0;      // group ranks below this one were lent the input (this rank aside)
  int released_end_ = 0;  // ... and those below this one have let go of it
};

}  // namespace

bool peers_read_in_place(const Call& call, const Tensor& t) {
  const auto& ready = t.ready_event();
  if (t.device().type != DeviceType::cpu || (ready && !ready->query())) return false;
  for (int member = 0; member < call.size(); ++member)
    if (member != call.rank_in_group() &&
        !call.rank().links().traits_to(call.group().global_rank(member)).lends())
      return false;
  return true;
}

Tensor flat_view(const Tensor& t, std::int64_t start, std::int64_t count) {
  std::byte* at = static_cast<std::byte*>(t.data()) +
                  static_cast<std::size_t>(start) * dtype_size(t.dtype());
  return Tensor::wrap(count != 0 ? at : nullptr, Shape{count}, t.dtype(), Device{},
                      [keep = t](void*) {});
}

std::vector<Tensor> exchange_parts(const Call& call, OpCode op, bool in_place,
                                   const std::function<Tensor(int peer)>& part_for,
                                   const std::vector<Tensor>* slots) {
  const std::uint64_t seq = begin_collective(call);
  LentInput lent(call, in_place);
  send_to_each_peer(call, op, seq, [&](Frame& frame, int peer) {
    frame.tensors.push_back(part_for(peer));
    lent.lend_to(peer);
  });
  std::vector<Tensor> all(static_cast<std::size_t>(call.size()));
  Landing landing{call.group().id, static_cast<std::uint32_t>(op), seq, {}};
  Frame& frame = call.frame();
  for_each_peer(call, [&](int peer) {
    if (slots != nullptr) landing.tensors.assign(1, (*slots)[static_cast<std::size_t>(peer)]);
    receive_collective(call, peer, op, seq, frame, std::nullopt, slots != nullptr ? &landing : nullptr);
    all[static_cast<std::size_t>(peer)] = take_only_tensor(call, peer, frame);
  });
  lent.take_back();
  return all;
}

std::vector<Tensor> exchange(const Call& call, const Tensor& mine, OpCode op,
                             const std::vector<Tensor>* slots) {
  // The caller may reuse `mine` once this returns.
  const bool in_place = peers_read_in_place(call, mine);
  const Tensor shared = call.size() > 1 && !in_place ? copy_for_peer(call, mine) : mine;
  std::vector<Tensor> all =
      exchange_parts(call, op, in_place, [&](int) { return shared; }, slots);
  all[static_cast<std::size_t>(call.rank_in_group())] = mine;
  return all;
}

}  // namespace rankmesh
