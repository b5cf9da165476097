#include "collectives/lent_memory.hpp"

#include <algorithm>
#include <string>

namespace rankmesh {

void LentMemory::lend_to(int peer) {
  if (lent_) lent_end_ = std::max(lent_end_, peer + 1);
}

void LentMemory::take_back() {
  for (; released_end_ < lent_end_; ++released_end_)
    if (released_end_ != call_.rank_in_group())
      call_.rank().links().release(call_.group().global_rank(released_end_), call_.deadline(),
                                   call_.describe());
}

LentMemory::~LentMemory() {
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

}  // namespace rankmesh
