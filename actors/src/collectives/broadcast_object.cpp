// broadcast_object: group rank `src`'s object on every member — over a shared-memory ring to
// the members on its node where one can be made, over the channels to the others
// (coordinator/object_rings.hpp says how rings are set up and announced).
#include "codec.hpp"
#include "collectives/collectives.hpp"
#include "coordinator/fan_out.hpp"
#include "coordinator/object_rings.hpp"
#include "coordinator/watchdog.hpp"

namespace rankmesh::collectives {
namespace {

// Object `seq` of this call, for error texts (formatted only for one).
std::string numbered(const Call& call, std::uint64_t seq) {
  return call.where() + " #" + std::to_string(seq);
}

// The source's first broadcast: a ring to the same-node members, announced to each of them in
// place of this broadcast's object — or, where none can be made, the reason in the log.
void set_up_ring(const Call& call, ObjectRings& rings, std::uint64_t seq) {
  const GroupState& group = call.group();
  RankContext& rank = call.rank();
  rings.out_decided = true;
  rings.reads_ring.assign(static_cast<std::size_t>(call.size()), false);
  std::vector<int> readers;  // group ranks
  std::vector<int> reader_ranks;
  for_each_peer(call, [&](int peer) {
    if (!rank.shares_memory_with(group.global_rank(peer))) return;
    readers.push_back(peer);
    reader_ranks.push_back(group.global_rank(peer));
  });
  if (readers.empty()) return;
  std::string name;
  try {
    rings.out = rank.broadcast_rings().create(reader_ranks, name);
  } catch (const std::exception& e) {
    rank.log(call.where() + ": no shared-memory ring for broadcast_object (" + e.what() +
             "); objects go over the channels");
    return;
  }
  Frame& frame = call.frame();
  for (std::size_t index = 0; index < readers.size(); ++index) {
    rings.reads_ring[static_cast<std::size_t>(readers[index])] = true;
    encode(Value(List{Value(name), Value(static_cast<std::int64_t>(index))}), frame.metadata);
    frame.tensors.clear();
    send_numbered(call, readers[index], OpCode::broadcast_ring, seq, frame);
  }
}

Value send_object_to_members(const Call& call, const Value& object, std::uint64_t seq) {
  ObjectRings& rings = object_rings(call.group());
  RankContext& rank = call.rank();
  encode(object, rings.encoded);
  const std::size_t object_bytes = rings.encoded.size();
  if (!rings.out_decided) set_up_ring(call, rings, seq);
  auto reads_ring = [&](int member) {
    return rings.out && rings.reads_ring[static_cast<std::size_t>(member)];
  };
  if (rings.out) {
    // A ring carries the request as a channel's message does (send_numbered appends it there).
    const auto request = call.request().trailer();
    rings.encoded.insert(rings.encoded.end(), request.begin(), request.end());
    const auto describe = [&] { return numbered(call, seq); };
    rings.out->write(seq, rings.encoded.data(), rings.encoded.size(), call.deadline(), describe);
    // In the operation history like a send over each reader's channel would be.
    for_each_peer(call, [&](int peer) {
      if (reads_ring(peer))
        rank.record(static_cast<std::uint32_t>(OpCode::broadcast_object),
                    call.group().history_label, call.group().global_rank(peer), true, seq, 0);
    });
  }
  for_each_peer(call, [&](int peer) {
    if (reads_ring(peer)) return;
    Frame& frame = call.frame();
    frame.metadata.assign(rings.encoded.begin(), rings.encoded.begin() + static_cast<std::ptrdiff_t>(object_bytes));
    frame.tensors.clear();
    send_numbered(call, peer, OpCode::broadcast_object, seq, frame);
  });
  return object;
}

// Attaches to the ring `src` announced (the announcement is used up).
RingReader& attach(const Call& call, ObjectRings& rings, int src) {
  auto announcement = rings.announced.find(src);
  Result<Value> announced = decode_object(announcement->second);
  rings.announced.erase(announcement);
  const List* fields =
      announced && announced.value().is<List>() ? &announced.value().as<List>() : nullptr;
  if (fields == nullptr || fields->size() != 2 || !(*fields)[0].is<std::string>() ||
      !(*fields)[1].is<std::int64_t>())
    throw Error(Errc::malformed, call.where() + ": " + call.who(src) +
                                     " announced a broadcast ring in a malformed message");
  try {
    auto reader = call.rank().broadcast_rings().open(
        (*fields)[0].as<std::string>(), static_cast<int>((*fields)[1].as<std::int64_t>()),
        call.group().global_rank(src));
    return *rings.in.emplace(src, std::move(reader)).first->second;
  } catch (const std::exception& e) {
    throw call.rank().reported(Error(Errc::peer_failed, call.where() +
                                                            ": cannot attach to the broadcast ring of " +
                                                            call.who(src) + ": " + e.what()));
  }
}

// Object `seq` from `src`'s ring into `bytes`; older ones (of broadcasts that timed out here)
// are discarded.
void read_from_ring(const Call& call, RingReader& ring, int src, std::uint64_t seq,
                    std::vector<std::uint8_t>& bytes) {
  const auto describe = [&] { return numbered(call, seq); };
  const PeerLinks::Describe what = describe;
  auto fetch = [&] {
    std::uint64_t tag = 0;
    // Waited for in slices, as a channel's receive: a group failed on another member ends it.
    if (!wait_watched(call, src, OpCode::broadcast_object, seq,
                      [&](Deadline until) { return ring.read(tag, bytes, until, what); }))
      throw call.rank().reported(Error(Errc::timeout, what() + " waited " +
                                                          milliseconds_text(call.group().timeout) +
                                                          " for " + call.who(src) +
                                                          ", which did not broadcast its object"));
    return tag;
  };
  // An older object: of a broadcast that failed here (discarded), or of one this rank completed
  // without reading it — the source's, while this rank believed another member the source.
  auto discard = [&](std::uint64_t tag) {
    if (call.group().sequences.unfinished(tag)) return false;
    throw completed_without(call, src, tag, CollectiveRequest::trailer_of(bytes));
  };
  auto early = [&](std::uint64_t tag) {
    throw diverged(call, call.who(src) + " broadcast its object #" + std::to_string(tag) +
                             " while this rank waits for #" + std::to_string(seq) +
                             ": broadcasts issued in a different order on each side");
  };
  await_numbered(seq, fetch, discard, early);
  call.rank().record(static_cast<std::uint32_t>(OpCode::broadcast_object),
                     call.group().history_label, call.group().global_rank(src), false, seq, 0);
  check_request(call, src, seq, bytes);
}

Value receive_object_from(const Call& call, int src, std::uint64_t seq) {
  ObjectRings& rings = object_rings(call.group());
  Frame& frame = call.frame();
  auto ring = rings.in.find(src);
  RingReader* reader = ring != rings.in.end() ? ring->second.get() : nullptr;
  if (reader == nullptr && rings.announced.count(src) == 0) {
    // The object itself, or the announcement of the source's ring (this one's, or a late one
    // of a broadcast that timed out here: then receive_collective returns it, kept in
    // `announced`).
    receive_collective(call, src, OpCode::broadcast_object, seq, frame, OpCode::broadcast_ring);
    if (frame.header.op == static_cast<std::uint32_t>(OpCode::broadcast_ring) &&
        rings.announced.count(src) == 0)
      keep_ring_announcement(call.group(), src, frame);
  }
  if (rings.announced.count(src) != 0) reader = &attach(call, rings, src);
  if (reader != nullptr) read_from_ring(call, *reader, src, seq, frame.metadata);
  Result<Value> decoded = decode_object(frame.metadata);
  if (!decoded)
    throw Error(Errc::malformed, call.where() + ": object from " + call.who(src) +
                                     " does not decode: " + decoded.error().what());
  return std::move(decoded).value();
}

}  // namespace

Value broadcast_object(GroupState& group, const Value& object, int src) {
  Call call(group, "broadcast_object");
  call.check_peer(src, "src");
  if (call.size() == 1) return object;
  call.ask(CollectiveRequest(OpCode::broadcast_object).root(src));
  const std::uint64_t seq = begin_collective(call);
  if (call.rank_in_group() == src) return send_object_to_members(call, object, seq);
  return receive_object_from(call, src, seq);
}

}  // namespace rankmesh::collectives
