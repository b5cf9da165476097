// ShmInbox: one rank's mailbox for lazily made shm channels. Each rank creates one at start-up and
// publishes its name (one registration per rank); a peer maps it on first need. Slot P is where
// rank P asks this rank to make the channel P -> here ("wants"), and where this rank's peer P
// leaves the name of the segment it made for the channel here -> P ("offer"). The segment is
// this user's memfd like every shm segment (shm_segment.hpp), and a name found in an offer is
// opened only when the announced peer's process offers it, so an outsider who scribbles here can
// at most delay a connection until its deadline. The header holds the address and value of a word
// in the owner's memory: a peer making a channel from the owner checks on it whether it may read
// the owner's memory (lent payloads) before it offers the segment.
#pragma once

#include <cstdint>
#include <string>

#include "deadline.hpp"
#include "shm/shm_segment.hpp"

namespace rankmesh {

class ShmInbox {
public:
  // This rank's inbox, for a world of `world` ranks; `probe_word` must live as long as the
  // inbox. Throws std::system_error.
  static ShmInbox create(int world, const std::uint64_t& probe_word);
  // A peer's inbox `name`, offered by pid `owner`. Throws Error(malformed) for a name that is
  // not a segment's, Error(peer_failed) for a segment that is not one, std::system_error when
  // it cannot be opened.
  static ShmInbox open(const std::string& name, int owner, int world);

  ShmInbox() = default;
  ~ShmInbox();
  ShmInbox(ShmInbox&& other) noexcept;
  ShmInbox& operator=(ShmInbox&& other) noexcept;

  const std::string& name() const noexcept { return name_; }
  // The owner's probe word: where it is in the owner's memory, and what it holds.
  std::uint64_t probe_address() const noexcept;
  std::uint64_t probe_value() const noexcept;

  // Rank `from` asks the owner to make the channel from -> owner.
  void post_want(int from) noexcept;
  // The owner takes the requests: true once per request from `from`.
  bool take_want(int from) noexcept;
  // Rank `from` offers the segment of the channel owner -> from.
  void post_offer(int from, const std::string& segment) noexcept;
  // The segment peer `from` offered, or "".
  std::string offer(int from) const;
  // Whether peer `from` has offered one (no copy of its name).
  bool has_offer(int from) const noexcept;

  // Sleeps until something was posted since `seen` (epoch()), `until`, or wake().
  std::uint32_t epoch() const noexcept;
  void wait(std::uint32_t seen, Deadline until) noexcept;
  void wake() noexcept;

private:
  struct Header;
  struct Slot;
  Header* header() const noexcept;
  Slot* slot(int peer) const noexcept;

  shm::Mapping mapping_;
  int handoff_ = -1;  // ours: offered for the whole run
  int slots_ = 0;
  std::string name_;
};

}  // namespace rankmesh
