// The runtime's transports, nearest first, and the rule that picks one per peer: the first in
// the table that reaches the peer, or the one a run forces (RANKMESH_TRANSPORT,
// RuntimeOptions::transport). Adding a transport is a folder of its own plus one line in
// transport_table.cpp.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "transport.hpp"

namespace rankmesh {

using TransportTable = std::span<const Transport* const>;

// inproc, shm, tcp.
TransportTable transport_table();

// "auto" and the table's names, for messages: "auto, inproc, shm, tcp".
std::string transport_choices(TransportTable table);
// The transport named `name` in `table`, or null.
const Transport* find_transport(TransportTable table, std::string_view name) noexcept;

// The transports a rank may need, in table order: with `forced` other than "auto" that one alone;
// else those up to and including the first that reaches every peer at most `farthest` away.
// Throws Error(invalid_argument) for a name that is neither "auto" nor in the table.
std::vector<const Transport*> candidate_transports(TransportTable table, std::string_view forced,
                                                   Reach farthest);

// Which of `candidates` carries the pair (rank, peer): the first that reaches `peer` from `rank`.
// Throws Error(invalid_config) when none does, naming the peer and where it is.
const Transport& transport_between(const std::vector<const Transport*>& candidates, int rank,
                                   int peer, const std::vector<RankPlace>& places);

}  // namespace rankmesh
