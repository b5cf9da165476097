// Every message of the control plane, in one place: what the actors of the bootstrap (the
// registry, the rank actors, the link actors standing in for another process's end) and the
// engine threads that ask them send each other. Each line names sender -> receiver, the
// arguments after the atom, and the answer.
//
// Across processes the same requests travel as the wire messages of control_codec.hpp
// (ControlKind): join -> joined, exchange -> exchanged, leave -> left, beat -> beat_ack,
// check -> propose/verdict, fail -> fail, group_fail -> group_fail, group_failed -> group_failed.
// The codec stays in its own CAF-free file so that the
// fuzzer builds it without CAF.
#pragma once

#include <caf/atom.hpp>

namespace rankmesh {

// --- a rank and the registry (registry.hpp, world_membership.hpp, registry_exchange.hpp)
// rank -> registry: (rank, world size, protocol version, node id, data-plane address, rank actor)
//   answers (failure: "" when formed, directory lines, the leader's actor) once all have joined.
using join_atom = caf::atom_constant<caf::atom("join")>;
// rank -> registry: (round, rank, value); answers (failure, every rank's value by rank).
using exchange_atom = caf::atom_constant<caf::atom("exchange")>;
// engine -> its rank actor: () ; rank actor -> registry: (rank). Answers (failure) once every
// rank has left.
using leave_atom = caf::atom_constant<caf::atom("leave")>;
// rank actor -> registry: (rank); answers (rank 0's CLOCK_MONOTONIC in ns). A heartbeat, and a
// clock sample for the rank's trace files (ClockOffset).
using beat_atom = caf::atom_constant<caf::atom("beat")>;
// registry -> rank actor: (reason). The world lost a rank; no answer.
using fail_atom = caf::atom_constant<caf::atom("fail")>;

// --- one group failing as a whole (issue 13, collective consensus): a member that sees the
// group's collectives diverge fails the group on every other member (RankContext::fail_group)
// engine -> its rank actor: (group id u32, members: std::vector<int> global ranks, reason).
// rank actor -> registry (across processes; the link names the rank): (rank, group id, members,
//   reason). The registry checks the notice (members in the world, bounded reason) and relays it
//   to every listed member but the sender; a malformed one is refused with a log line. No answer.
using group_fail_atom = caf::atom_constant<caf::atom("groupfail")>;
// registry -> rank actor, or (one process) rank actor -> rank actor: (group id u32, reason).
//   The group failed on another member: its operations here fail with the reason. No answer.
using group_failed_atom = caf::atom_constant<caf::atom("groupfaild")>;
// runtime -> rank actor (one process): (every rank's actor, by rank: std::vector<caf::actor>),
//   where group failure notices go without a registry.
using peers_atom = caf::atom_constant<caf::atom("peers")>;

// --- initialize_model_parallel's agreement (rank_actor.hpp)
// engine -> its rank actor: (proposal); answers the leader's verdict ("" when all agree).
using propose_atom = caf::atom_constant<caf::atom("propose")>;
// rank actor -> leader (rank 0's actor): (rank, proposal); answers the verdict.
using check_atom = caf::atom_constant<caf::atom("check")>;
// runtime -> rank actor: (leader's actor). Who the leader is, once the world has formed.
using leader_atom = caf::atom_constant<caf::atom("leader")>;

// --- an authenticated link's reader thread -> the actor at its end (registry_link.hpp)
// (kind, request id, fields): one decoded control message.
using control_atom = caf::atom_constant<caf::atom("control")>;
// (reason): the link is gone.
using closed_atom = caf::atom_constant<caf::atom("closed")>;

// --- the registry's timers, sent to itself
// (): is every member's last heartbeat recent enough?
using check_timer_atom = caf::atom_constant<caf::atom("chktimer")>;
// (): has everybody joined in time?
using join_timer_atom = caf::atom_constant<caf::atom("jointimer")>;

}  // namespace rankmesh
