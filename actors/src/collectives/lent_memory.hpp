// LentMemory: the caller's memory, lent to the channels of the peers it was sent to (they read
// it in place: shm with process_vm_readv, tcp from its writer thread). However the operation
// ends, no peer may read it afterwards, when the caller may already be changing it: each
// channel has either let go of it or is closed, so that its peer's receive fails instead of
// returning bytes that mix old and new.
#pragma once

#include "coordinator/call.hpp"

namespace rankmesh {

class LentMemory {
public:
  // `lent`: whether anything is lent at all (false: every peer got a copy it may keep).
  LentMemory(const Call& call, bool lent) : call_(call), lent_(lent) {}
  LentMemory(const LentMemory&) = delete;
  LentMemory& operator=(const LentMemory&) = delete;
  // Group rank `peer` was sent some of it.
  void lend_to(int peer);
  // Waits until the peers' channels have let go of it; throws like PeerLinks::release.
  void take_back();
  // Closes the channel of every peer that may still read it.
  ~LentMemory();

private:
  const Call& call_;
  const bool lent_;
  int lent_end_ = 0;      // group ranks below this one were lent memory (this rank aside)
  int released_end_ = 0;  // ... and those below this one have let go of it
};

}  // namespace rankmesh
