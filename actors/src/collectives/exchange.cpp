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

std::vector<Tensor> exchange(const Call& call, const Tensor& mine, OpCode op,
                             const std::vector<Tensor>* slots) {
  const std::uint64_t seq = begin_collective(call);
  const int self = call.rank_in_group();
  // The caller may reuse `mine` once this returns.
  const auto& ready = mine.ready_event();
  bool lend = mine.device().type == DeviceType::cpu && (!ready || ready->query());
  for (int member = 0; member < call.size() && lend; ++member)
    lend = member == self || call.rank().links().traits_to(call.group().global_rank(member)).lends();
  const Tensor shared = call.size() > 1 && !lend ? copy_for_peer(call, mine) : mine;
  LentInput lent(call, lend);
  send_to_each_peer(call, op, seq, [&](Frame& frame, int peer) {
    frame.tensors.push_back(shared);
    lent.lend_to(peer);
  });
  std::vector<Tensor> all(static_cast<std::size_t>(call.size()));
  all[static_cast<std::size_t>(self)] = mine;
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

}  // namespace rankmesh
