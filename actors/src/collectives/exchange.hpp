// exchange: a part of the caller's memory to every peer, and every peer's part back (the step of
// all_gather and of both halves of all_reduce). Where every peer's channel can release what it
// holds (shm, tcp), peers read the caller's memory itself — over shm straight from this
// process with process_vm_readv — and the channels have let go of it before exchange returns;
// otherwise (inproc peers keep what they get) the parts are copies the peers may keep.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "coordinator/call.hpp"
#include "op_code.hpp"

namespace rankmesh {

// Whether every peer's channel reads `t` in place and lets go of it (so that no copy is needed
// to keep the caller's tensor safe from the transfer).
bool peers_read_in_place(const Call& call, const Tensor& t);

// `count` elements of host tensor `t` from element `start`, as a 1-D tensor sharing its memory.
Tensor flat_view(const Tensor& t, std::int64_t start, std::int64_t count);

// Sends `part_for(peer)` to every peer and returns every peer's part in group-rank order (the
// caller's own entry stays undefined). `in_place`: the parts are the caller's memory, which
// peers may read only until this returns (peers_read_in_place said so); else they are copies
// the peers may keep. With `slots` (one per member), each peer's part is read straight into its
// slot where the transport allows and it fits; the caller checks which ones landed.
std::vector<Tensor> exchange_parts(const Call& call, OpCode op, bool in_place,
                                   const std::function<Tensor(int peer)>& part_for,
                                   const std::vector<Tensor>* slots = nullptr);

// Sends `mine` to every peer and returns every member's tensor in group-rank order (`slots`:
// as for exchange_parts).
std::vector<Tensor> exchange(const Call& call, const Tensor& mine, OpCode op,
                             const std::vector<Tensor>* slots = nullptr);

}  // namespace rankmesh
