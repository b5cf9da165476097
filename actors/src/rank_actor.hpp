// The rank actor (CAF): the control plane of its rank. It does what is rare — today, checking
// that every rank initializes the same way; per-message traffic never passes through it.
// Kept out of public headers: only runtime.cpp and parallel_state.cpp see CAF.
#pragma once

#include <string>

#include <caf/all.hpp>

namespace rankmesh {

using propose_atom = caf::atom_constant<caf::atom("propose")>;  // engine -> its rank actor
using check_atom = caf::atom_constant<caf::atom("check")>;      // rank actor -> leader

// The actor of `rank`. The leader (rank 0) collects every rank's proposal for
// initialize_model_parallel and answers all of them with one verdict: "" when all agree, else an
// error naming the first rank that differs. `leader` is null for the leader itself.
caf::behavior rank_actor(caf::event_based_actor* self, int rank, int world_size,
                         caf::actor leader);

}  // namespace rankmesh
