// exchange: every member's tensor to every member (all_gather's step). Peers read the caller's
// tensor itself where LentMemory lends it (tcp; shm when it lies in pooled memory), and their
// channels have let go of it before exchange returns; the others share one copy.
#pragma once

#include <cstdint>
#include <vector>

#include "coordinator/call.hpp"
#include "op_code.hpp"

namespace rankmesh {

// The elements of host tensor `t` from element `start` on, seen as `shape`: a tensor sharing
// its memory (and keeping it alive).
Tensor view_of(const Tensor& t, std::int64_t start, const Shape& shape);

// Calls `each(peer)` for every other member, starting with the one after this rank and wrapping
// around: members reading from all the others at once then each read from a different one,
// instead of all from the same one (whose pages, over shm, they would all pin at once).
template <class Each>
void for_each_peer_after_self(const Call& call, Each&& each) {
  for (int step = 1; step < call.size(); ++step) each((call.rank_in_group() + step) % call.size());
}

// Sends `mine` to every peer and returns every member's tensor in group-rank order (`pooled`:
// `mine` lies in memory from the rank's allocator, LentMemory::lend). With `slots` (one per
// member), each peer's tensor ends in its slot — read straight into it where the transport
// allows, copied there otherwise — when it has the slot's dtype and shape; one that has not is
// returned as it came, for the caller to refuse.
std::vector<Tensor> exchange(const Call& call, const Tensor& mine, bool pooled, OpCode op,
                             const std::vector<Tensor>* slots = nullptr);

}  // namespace rankmesh
