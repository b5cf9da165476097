// LentMemory: parts of the caller's memory (its input, or a result it is about to return) sent to
// peers without a copy. A channel that copies a payload before send() returns (shm up to its
// inline threshold) gets the part itself; one that reads it after send() returns gets it lent
// (shm: the receiver's process_vm_readv, tcp: the link's writer thread), and the operation
// takes it back before returning. Inproc peers keep what they get, so they get a copy — or,
// where the collective's receivers let go of what they receive before they take back what they
// lent (all_gather's exchange with slots), a loan: a tensor over the part whose release the
// operation waits for; or, where the part is the caller's own memory (broadcast's root), a loan
// behind a LoanGate that the receivers claim while they read it (lend_gated).
// However the operation ends, no peer may read lent memory afterwards, when the caller may
// already be changing it: each channel has either let go of it or is closed, so that its peer's
// receive fails instead of returning bytes that mix old and new. A loan may outlive a failed
// operation (a peer that took its frame late, or drains it from the closed channel): it keeps
// its memory alive, and since that memory never reaches the caller, nothing changes it. Lent or
// loaned, the operation completes only once its peers have taken what it sent: one whose peer
// abandoned the collective fails at its deadline.
#pragma once

#include <memory>
#include <vector>

#include "coordinator/call.hpp"
#include "op_code.hpp"

namespace rankmesh {

class LentMemory {
public:
  explicit LentMemory(const Call& call);
  LentMemory(const LentMemory&) = delete;
  LentMemory& operator=(const LentMemory&) = delete;
  // What to send group rank `peer` for `part`, a host view of the caller's memory: the part
  // itself (noted as lent where the channel reads it later) or a copy. `read_in_place`: shm
  // peers may read the part where it is. Their process_vm_readv pins every page it reads, which
  // is cheap for memory from the rank's allocator (huge pages) and costs more than a copy into
  // it for other memory, often 4 KiB pages, read by several peers (all_reduce of 16 MiB: 6.3
  // against 8.5 ms of CPU on 2 ranks, 17.8 against 22.4 on 4; README, "Collectives"); a single
  // reader is served better still by a channel that copies while it sends (broadcast marks the
  // tensor borrowed for one). One copy serves every peer that `part` goes to in a row.
  // `receivers_let_go`: the peers' side of this collective drops what it receives before it
  // takes back what it lent, so that an in-process peer may be loaned a loanable() part instead
  // of getting a copy.
  // Loans are only for memory the operation never hands its caller when it fails (all_gather's
  // block of its result): a peer late enough may still read a loan after a failure.
  Tensor lend(const Tensor& part, int peer, bool read_in_place, bool receivers_let_go = false);
  // What to send in-process group rank `peer` for `part`, the caller's own memory, which the
  // caller may change after a failed operation too (broadcast's root): a loan behind a LoanGate,
  // put in `frame` for the peer to claim while it reads (ClaimedLoan), and revoked should the
  // operation fail with it still out, so that a peer reading late fails instead of returning
  // bytes the caller is changing. Parts too small to loan, or not yet in host memory, are
  // copied for the peer, and peers over other channels get what lend() gives them.
  Tensor lend_gated(const Tensor& part, int peer, Frame& frame);
  // Host bytes of at least this many are loaned: smaller parts cost less to copy than to wait for.
  static constexpr std::size_t kLoanBytes = 256 * 1024;
  // Waits until the channels of the peers lent anything have let go of it, as receives wait
  // (wait_watched: the watchdog speaks for message `seq` of `op`, a failed group ends it);
  // throws Error(timeout) at the deadline, Error(peer_failed) for a closed channel.
  void take_back(OpCode op, std::uint64_t seq);
  // Revokes the gate of gated loans, then closes the channel of every other peer that may still
  // read lent memory.
  ~LentMemory();

private:
  // In-process loans still held, by group rank; shared with the loans themselves, which a
  // peer may drop after this operation has ended (it failed).
  struct Loans;
  // A tensor over `part` for in-process group rank `peer`, whose release take_back() waits for.
  Tensor loan(const Tensor& part, int peer);

  const Call& call_;
  std::vector<bool> lent_;  // by group rank: holds memory it has not let go of
  std::shared_ptr<Loans> loans_;  // made with the first loan
  std::shared_ptr<LoanGate> gate_;  // made with the first gated loan, one for all its peers
  std::vector<bool> gated_;         // by group rank: loaned behind gate_
  Tensor last_part_, last_copy_;
};

// A receiver's claim on the loan its frame carries (frame.loan, put there by lend_gated), held
// while it reads the frame's tensors: taken on construction, let go on destruction. Where the
// sender revoked the loan (its operation failed first), construction throws Error(peer_failed)
// naming the sender and this call. A frame without a loan holds nothing.
class ClaimedLoan {
public:
  ClaimedLoan(const Call& call, int src, const Frame& frame);
  ClaimedLoan(const ClaimedLoan&) = delete;
  ClaimedLoan& operator=(const ClaimedLoan&) = delete;
  ~ClaimedLoan();

private:
  std::shared_ptr<LoanGate> gate_;  // claimed
};

}  // namespace rankmesh
