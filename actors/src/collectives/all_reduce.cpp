// all_reduce: reduce-scatter by owner, then all-gather. Each member owns one chunk of the
// flattened tensor; it adds every member's part of it in ascending group-rank order, so the
// result equals a one-rank reference element by element, writes the sum straight into the
// result, whence peers read it (over shm straight from its memory with process_vm_readv); every
// owner's sums land straight in their place in the result. tcp peers read the input in place
// too; shm peers get its pieces copied into pooled memory (LentMemory::lend says why).
//
// Across nodes the chunks are pipelined in pieces: the next piece of the inputs is on the wire
// while this one is reduced, and sums go on piece by piece. On one node (every member reached
// through shared memory) a chunk is one piece: there the reader copies the bytes itself, so
// nothing would overlap, and each step only adds a synchronisation (2 MiB pieces measured no
// faster on 2 ranks and slower on 4 on a 2-core machine).
//
// Steps, alike on every member, each one message to every peer and one from each (numbered in
// this order): input piece 0; then for each piece k, input piece k+1 (sent before piece k is
// reduced, received after) and sum piece k. Each channel thus carries at most one message its
// receiver has not asked for yet (a tcp sender waits for the peer to take one before it
// writes the next, so two sends in a row to a peer that does the same would wait on each other).
#include <algorithm>
#include <cstring>
#include <vector>

#include "collectives/collectives.hpp"
#include "collectives/exchange.hpp"
#include "collectives/lent_memory.hpp"
#include "coordinator/fan_out.hpp"
#include "reduce.hpp"

namespace rankmesh::collectives {
namespace {

// Across nodes, a piece is sent and reduced at a time: small enough that transfer and reduction
// overlap and a piece is added while it is still in cache, large enough that the steps' own
// cost stays small.
constexpr std::int64_t kPieceBytes = std::int64_t{2} << 20;
constexpr std::int64_t kMaxPieces = 16;

// Whether every member reaches every other through shared memory: the same answer on every
// member, as sharing memory is being on one node (and a transport that can).
bool on_one_node(const Call& call) {
  for (int member = 0; member < call.size(); ++member)
    if (member != call.rank_in_group() &&
        !call.rank().links().shares_memory_with(call.group().global_rank(member)))
      return false;
  return true;
}

// How `numel` elements are split among `members` owners, and each owner's chunk into pieces.
struct Pieces {
  std::int64_t numel;
  int members;
  std::int64_t count;  // pieces per chunk, alike on every member

  Pieces(std::int64_t numel, int members, std::size_t element, bool pipelined)
      : numel(numel), members(members) {
    const std::int64_t largest_chunk = (numel + members - 1) / members;
    const std::int64_t bytes = largest_chunk * static_cast<std::int64_t>(element);
    count = pipelined ? std::clamp<std::int64_t>((bytes + kPieceBytes - 1) / kPieceBytes, 1, kMaxPieces)
                      : 1;
  }
  // Element bounds of piece `k` of owner `owner`'s chunk.
  std::int64_t start(int owner, std::int64_t k) const {
    const std::int64_t chunk_start = numel * owner / members;
    const std::int64_t chunk_length = numel * (owner + 1) / members - chunk_start;
    return chunk_start + chunk_length * k / count;
  }
  std::int64_t length(int owner, std::int64_t k) const {
    return (k + 1 < count ? start(owner, k + 1) : numel * (owner + 1) / members) - start(owner, k);
  }
};

}  // namespace

Tensor all_reduce(GroupState& group, const Tensor& input, ReduceOp op) {
  Call call(group, "all_reduce");
  check_reducible(input.dtype(), op);
  require_host_ready(call, input);
  if (call.size() == 1) return copy_for_peer(call, input);
  call.ask(CollectiveRequest(OpCode::all_reduce).tensor(input).reduce(op));
  const int self = call.rank_in_group();
  const std::size_t element = dtype_size(input.dtype());
  const Pieces pieces(input.numel(), call.size(), element, !on_one_node(call));
  std::uint64_t seq = begin_collective(call);  // the steps take the numbers from here on
  for (std::int64_t step = 1; step < 2 * pieces.count; ++step) begin_collective(call);
  Tensor out = call.rank().allocate(input.shape(), input.dtype());
  LentMemory lent(call);
  auto piece_of = [&](const Tensor& t, int owner, std::int64_t k) {
    return view_of(t, pieces.start(owner, k), Shape{pieces.length(owner, k)});
  };
  Frame& frame = call.frame();

  // Input piece k to every owner, and every member's piece k of this rank's chunk back.
  std::vector<Tensor> parts(static_cast<std::size_t>(call.size()));
  auto send_inputs = [&](std::int64_t k, std::uint64_t number) {
    send_tensor_to_each_peer(call, OpCode::all_reduce, number,
                             [&](int owner) { return lent.lend(piece_of(input, owner, k), owner, false); });
  };
  auto receive_inputs = [&](std::int64_t k, std::uint64_t number) {
    const std::int64_t length = pieces.length(self, k);
    for_each_peer_after_self(call, [&](int peer) {
      receive_collective(call, peer, OpCode::all_reduce, number, frame);
      Tensor part = take_only_tensor(call, peer, frame);
      if (part.dtype() != input.dtype() || part.numel() != length)
        throw call.payload_mismatch(peer, part, std::to_string(length) + " elements of " +
                                                    to_string(input.dtype()) +
                                                    " (ranks passed different tensors)");
      parts[static_cast<std::size_t>(peer)] = std::move(part);
    });
  };
  // Piece k of this rank's chunk: every member's, added in group-rank order into the result.
  std::vector<const void*> addends(static_cast<std::size_t>(call.size()));
  auto reduce = [&](std::int64_t k) {
    const std::size_t offset = static_cast<std::size_t>(pieces.start(self, k)) * element;
    for (int member = 0; member < call.size(); ++member)
      addends[static_cast<std::size_t>(member)] =
          member == self ? bytes_of(input) + offset : parts[static_cast<std::size_t>(member)].data();
    reduce_many(addends, bytes_of(out) + offset, static_cast<std::size_t>(pieces.length(self, k)),
                input.dtype(), op);
    std::fill(parts.begin(), parts.end(), Tensor());  // back to the pool, still in cache
  };
  // Sum piece k to every peer, and every other owner's piece k straight into its place.
  Landing landing{call.group().id, static_cast<std::uint32_t>(OpCode::all_reduce), 0, {}};
  auto exchange_sums = [&](std::int64_t k, std::uint64_t number) {
    const Tensor sum = piece_of(out, self, k);
    send_tensor_to_each_peer(call, OpCode::all_reduce, number,
                             [&](int peer) { return lent.lend(sum, peer, true); });
    landing.seq = number;
    for_each_peer_after_self(call, [&](int owner) {
      const Tensor slot = view_of(out, pieces.start(owner, k), Shape{pieces.length(owner, k)});
      landing.tensors.assign(1, slot);
      receive_collective(call, owner, OpCode::all_reduce, number, frame, std::nullopt, &landing);
      const Tensor part = take_only_tensor(call, owner, frame);
      if (part.dtype() != input.dtype() || part.numel() != slot.numel())
        throw call.payload_mismatch(owner, part, std::to_string(slot.numel()) + " elements");
      if (part.nbytes() != 0 && part.data() != slot.data())  // did not land in place
        std::memcpy(slot.data(), part.data(), part.nbytes());
    });
  };

  send_inputs(0, seq);
  receive_inputs(0, seq++);
  for (std::int64_t k = 0; k < pieces.count; ++k) {
    const bool next = k + 1 < pieces.count;
    const std::uint64_t next_inputs = next ? seq++ : 0;
    if (next) send_inputs(k + 1, next_inputs);
    reduce(k);
    if (next) receive_inputs(k + 1, next_inputs);
    exchange_sums(k, seq++);
  }
  lent.take_back(OpCode::all_reduce, seq - 1);  // the last step's number
  return out;
}

}  // namespace rankmesh::collectives
