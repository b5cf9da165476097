#include "collectives/lent_memory.hpp"

#include <atomic>
#include <string>

#include "coordinator/payloads.hpp"
#include "coordinator/watchdog.hpp"
#include "parker.hpp"

namespace rankmesh {

struct LentMemory::Loans {
  explicit Loans(int members) : held(static_cast<std::size_t>(members)) {}
  std::vector<std::atomic<int>> held;  // by group rank
  Parker released;                     // notified by every loan let go
};

LentMemory::LentMemory(const Call& call)
    : call_(call),
      lent_(static_cast<std::size_t>(call.size()), false),
      gated_(static_cast<std::size_t>(call.size()), false) {}

Tensor LentMemory::lend(const Tensor& part, int peer, bool read_in_place, bool receivers_let_go) {
  const auto& ready = part.ready_event();
  const bool host = part.device().type == DeviceType::cpu && (!ready || ready->query());
  if (host && copied_on_send(call_, part, peer)) return part;
  const int global = call_.group().global_rank(peer);
  const ChannelTraits& traits = call_.rank().links().traits_to(global);
  const bool pinned_by_reader = call_.rank().links().shares_memory_with(global);
  if (host && (read_in_place || !pinned_by_reader) && traits.lends()) {
    lent_[static_cast<std::size_t>(peer)] = true;
    return part;
  }
  if (host && receivers_let_go && traits.shares_tensors && part.nbytes() >= kLoanBytes)
    return loan(part, peer);
  if (!last_part_.defined() || last_part_.data() != part.data() ||
      last_part_.nbytes() != part.nbytes()) {
    last_copy_ = copy_for_peer(call_, part);
    last_part_ = part;
  }
  return last_copy_;
}

Tensor LentMemory::lend_gated(const Tensor& part, int peer, Frame& frame) {
  const ChannelTraits& traits = call_.rank().links().traits_to(call_.group().global_rank(peer));
  if (!traits.shares_tensors) return lend(part, peer, false);
  // A peer in this process keeps what it gets unless it is a loan: a copy of its own.
  if (!host_bytes_ready(part) || part.nbytes() < kLoanBytes) return copy_for_peer(call_, part);
  if (!gate_) gate_ = std::make_shared<LoanGate>();
  frame.loan = gate_;
  gated_[static_cast<std::size_t>(peer)] = true;
  return loan(part, peer);
}

Tensor LentMemory::loan(const Tensor& part, int peer) {
  // The peer reads the part itself (one copy, into its own memory, instead of two); the loan
  // keeps the memory alive, and its release, on the peer's thread, tells this operation.
  if (!loans_) loans_ = std::make_shared<Loans>(call_.size());
  std::atomic<int>& held = loans_->held[static_cast<std::size_t>(peer)];
  held.fetch_add(1, std::memory_order_relaxed);
  return Tensor::wrap(part.data(), part.shape(), part.dtype(), part.device(),
                      [loans = loans_, &held, keep = part](void*) {
                        held.fetch_sub(1, std::memory_order_acq_rel);
                        loans->released.notify();
                      });
}

void LentMemory::take_back(OpCode op, std::uint64_t seq) {
  PeerLinks& links = call_.rank().links();
  for (int member = 0; loans_ && member < call_.size(); ++member) {
    const std::atomic<int>& held = loans_->held[static_cast<std::size_t>(member)];
    auto let_go = [&] { return held.load(std::memory_order_acquire) == 0; };
    if (!wait_watched(call_, member, op, seq,
                      [&](Deadline until) { return loans_->released.wait_until(let_go, until); }))
      throw links.not_released(call_.group().global_rank(member), call_.describe());
  }
  for (int member = 0; member < call_.size(); ++member) {
    if (!lent_[static_cast<std::size_t>(member)]) continue;
    const int peer = call_.group().global_rank(member);
    // Waited for as a receive is: a member that failed the group meanwhile ends the wait.
    if (!wait_watched(call_, member, op, seq,
                      [&](Deadline until) { return links.wait_released(peer, until, call_.describe()); }))
      throw links.not_released(peer, call_.describe());
    lent_[static_cast<std::size_t>(member)] = false;
  }
}

LentMemory::~LentMemory() {
  PeerLinks& links = call_.rank().links();
  // After a success no claim is held and nobody claims any more: a no-op then.
  if (gate_) gate_->revoke();
  for (int member = 0; member < call_.size(); ++member) {
    // A gated loan, revoked, is read by nobody: its peer's channel stays open (the peer's own
    // call fails when it finds the loan withdrawn, and the pair goes on with the next one).
    const bool loaned =
        loans_ && !gated_[static_cast<std::size_t>(member)] &&
        loans_->held[static_cast<std::size_t>(member)].load(std::memory_order_acquire) != 0;
    if (!lent_[static_cast<std::size_t>(member)] && !loaned) continue;
    const int peer = call_.group().global_rank(member);
    if (!loaned && links.released(peer)) continue;
    try {
      links.close_channel_to(peer, call_.where() + " failed while rank " + std::to_string(peer) +
                                       " could still read its memory, which the caller may "
                                       "change from now on; the channel is closed so that "
                                       "rank " + std::to_string(peer) + " fails instead");
    } catch (...) {
      // A channel that cannot even close is already closed: nobody reads through it.
    }
  }
}

ClaimedLoan::ClaimedLoan(const Call& call, int src, const Frame& frame) {
  if (!frame.loan) return;
  if (!frame.loan->claim())
    throw Error(Errc::peer_failed,
                call.where() + ": " + call.who(src) + " withdrew the memory it lent this rank " +
                    "before this rank read it (its side of the call failed first, and its " +
                    "caller may be changing that memory): nothing was received");
  gate_ = frame.loan;
}

ClaimedLoan::~ClaimedLoan() {
  if (gate_ != nullptr) gate_->release();
}

}  // namespace rankmesh
