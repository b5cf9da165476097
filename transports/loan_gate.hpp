// LoanGate: the gate on memory that a sender in this process lends its peers with a frame instead
// of copying it (inproc; LentMemory::lend_gated), where that memory is its caller's own, which the
// caller may change as soon as the operation returns — failed too. A receiver claims the gate
// before it reads the memory and lets go after; a sender whose operation fails with the memory
// still out revokes the gate first. Revoking waits out the claims held (a reader in the middle of
// its copy) and makes every later claim fail, so a receiver never reads bytes its owner may
// already be changing: it reports the loan withdrawn instead of returning a mix of old and new.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace rankmesh {

class LoanGate {
public:
  // Receiver: true when the memory may be read until release(); false once revoked.
  bool claim() noexcept {
    // One atomic for both the count and the revoked bit: a claim and a revocation are ordered
    // by it, so a claim either sees the revocation or is seen (and waited out) by it.
    if ((state_.fetch_add(1, std::memory_order_acq_rel) & kRevoked) == 0) return true;
    state_.fetch_sub(1, std::memory_order_release);
    return false;
  }
  void release() noexcept { state_.fetch_sub(1, std::memory_order_release); }

  // Sender: no claim succeeds from now on. Returns once no claim is held: a holder only copies
  // the memory out (it takes its claim after everything else it needs is ready), so the wait
  // lasts no longer than that copy.
  void revoke() noexcept {
    state_.fetch_or(kRevoked, std::memory_order_acq_rel);
    while ((state_.load(std::memory_order_acquire) & ~kRevoked) != 0) std::this_thread::yield();
  }

private:
  static constexpr std::uint32_t kRevoked = 1u << 31;
  std::atomic<std::uint32_t> state_{0};  // claims held, and kRevoked
};

}  // namespace rankmesh
