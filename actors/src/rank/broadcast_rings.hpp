// BroadcastRings: a rank's shared-memory broadcast rings towards same-node peers
// (shm/shm_broadcast.hpp), behind what the coordinator needs — write an object, read one, wait
// for the readers — with the ring's exceptions turned into rankmesh::Errors (reported with the
// rank's recent operations) and every ring closed when the rank fails.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "deadline.hpp"
#include "rank/op_history.hpp"
#include "rank/peer_links.hpp"

namespace rankmesh {

class ShmBroadcastRing;

// The ring this rank writes to some of its peers.
class RingWriter {
public:
  RingWriter(std::shared_ptr<ShmBroadcastRing> ring, const OpHistory& history);
  ~RingWriter();
  // Hands `size` bytes under `tag` to every reader. Error(timeout) when a reader leaves the
  // ring full until the deadline, Error(peer_failed) once it is closed; `what()` starts the
  // text (called for an error only).
  void write(std::uint64_t tag, const std::uint8_t* data, std::size_t size, Deadline deadline,
             const PeerLinks::Describe& what);
  // Until every reader has attached (true), or the ring is closed or the deadline passes.
  bool wait_attached(Deadline deadline);

private:
  std::shared_ptr<ShmBroadcastRing> ring_;
  const OpHistory& history_;
};

// A ring this rank reads from one peer.
class RingReader {
public:
  RingReader(std::shared_ptr<ShmBroadcastRing> ring, const OpHistory& history);
  ~RingReader();
  // The next object into `bytes`, its tag into `tag`; false at the deadline. Error(peer_failed)
  // once the ring is closed and empty or its writer died, whose text `what()` starts.
  bool read(std::uint64_t& tag, std::vector<std::uint8_t>& bytes, Deadline deadline,
            const PeerLinks::Describe& what);

private:
  std::shared_ptr<ShmBroadcastRing> ring_;
  const OpHistory& history_;
};

class BroadcastRings {
public:
  BroadcastRings(int rank, const PeerLinks& links, const OpHistory& history)
      : rank_(rank), links_(links), history_(history) {}

  // A ring this rank writes to the global ranks `readers`; its name for them goes into `name`.
  // Throws (std::exception) when none can be made.
  std::unique_ptr<RingWriter> create(const std::vector<int>& readers, std::string& name);
  // Attaches to global rank `writer`'s ring `name` as reader `index`. Throws (std::exception)
  // when it cannot.
  std::unique_ptr<RingReader> open(const std::string& name, int index, int writer);
  // Closes every ring, now and when made later: their waits fail with `reason`.
  void fail(const std::string& reason);

private:
  void track(const std::shared_ptr<ShmBroadcastRing>& ring);

  const int rank_;
  const PeerLinks& links_;
  const OpHistory& history_;
  std::mutex mutex_;
  std::string failure_;
  std::vector<std::weak_ptr<ShmBroadcastRing>> rings_;
};

}  // namespace rankmesh
