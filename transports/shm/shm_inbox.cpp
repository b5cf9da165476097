#include "shm/shm_inbox.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

constexpr std::uint64_t kInboxMagic = 0x3242584f424e4952;  // "RINBOXB2"
constexpr std::size_t kHeaderBytes = 64;
constexpr std::size_t kOfferBytes = 240;

}  // namespace

struct ShmInbox::Header {
  std::uint64_t magic;
  std::uint32_t slots;
  std::uint32_t epoch;     // bumped by every post: the owner sleeps on it
  std::uint32_t sleepers;
  std::uint64_t probe_address;  // written before the magic, never after
  std::uint64_t probe_value;
};

struct ShmInbox::Slot {
  std::uint32_t wants;       // written by the peer, taken by the owner
  std::uint32_t offer_size;  // written last, by the peer: the offer's bytes are there
  char offer[kOfferBytes];
};

ShmInbox ShmInbox::create(int world, const std::uint64_t& probe_word) {
  static_assert(sizeof(Header) <= kHeaderBytes);
  ShmInbox inbox;
  inbox.slots_ = world;
  const std::size_t bytes = kHeaderBytes + sizeof(Slot) * static_cast<std::size_t>(world);
  inbox.mapping_ = shm::create_segment(bytes, inbox.name_, inbox.handoff_);
  inbox.header()->slots = static_cast<std::uint32_t>(world);
  inbox.header()->probe_address = reinterpret_cast<std::uintptr_t>(&probe_word);
  inbox.header()->probe_value = probe_word;
  shm::at(inbox.header()->magic).store(kInboxMagic, std::memory_order_release);
  return inbox;
}

ShmInbox ShmInbox::open(const std::string& name, int owner, int world) {
  const std::size_t bytes = kHeaderBytes + sizeof(Slot) * static_cast<std::size_t>(world);
  ShmInbox inbox;
  inbox.mapping_ = shm::open_segment(name, bytes, bytes, "rankmesh inbox", owner);
  inbox.slots_ = world;
  inbox.name_ = name;
  if (shm::at(inbox.header()->magic).load(std::memory_order_acquire) != kInboxMagic ||
      inbox.header()->slots != static_cast<std::uint32_t>(world))
    throw Error(Errc::peer_failed, "shm segment " + name + " is not a rankmesh inbox for " +
                                            std::to_string(world) + " ranks");
  return inbox;
}

ShmInbox::~ShmInbox() {
  shm::unmap(mapping_);
  shm::end_handoff(handoff_);
}

ShmInbox::ShmInbox(ShmInbox&& other) noexcept
    : mapping_(std::exchange(other.mapping_, {})), handoff_(std::exchange(other.handoff_, -1)),
      slots_(other.slots_), name_(std::move(other.name_)) {}

ShmInbox& ShmInbox::operator=(ShmInbox&& other) noexcept {
  if (this == &other) return *this;
  shm::unmap(mapping_);
  shm::end_handoff(handoff_);
  mapping_ = std::exchange(other.mapping_, {});
  handoff_ = std::exchange(other.handoff_, -1);
  slots_ = other.slots_;
  name_ = std::move(other.name_);
  return *this;
}

std::uint64_t ShmInbox::probe_address() const noexcept { return header()->probe_address; }

std::uint64_t ShmInbox::probe_value() const noexcept { return header()->probe_value; }

ShmInbox::Header* ShmInbox::header() const noexcept {
  return reinterpret_cast<Header*>(mapping_.base);
}

ShmInbox::Slot* ShmInbox::slot(int peer) const noexcept {
  return reinterpret_cast<Slot*>(mapping_.base + kHeaderBytes) + peer;
}

void ShmInbox::post_want(int from) noexcept {
  shm::at(slot(from)->wants).store(1, std::memory_order_seq_cst);
  wake();
}

bool ShmInbox::take_want(int from) noexcept {
  return shm::at(slot(from)->wants).exchange(0, std::memory_order_seq_cst) != 0;
}

void ShmInbox::post_offer(int from, const std::string& segment) noexcept {
  Slot* target = slot(from);
  const std::size_t size = std::min(segment.size(), kOfferBytes);
  shm::at(target->offer_size).store(0, std::memory_order_seq_cst);
  std::memcpy(target->offer, segment.data(), size);
  shm::at(target->offer_size).store(static_cast<std::uint32_t>(size), std::memory_order_seq_cst);
  wake();
}

std::string ShmInbox::offer(int from) const {
  const Slot* source = slot(from);
  const std::uint32_t size =
      shm::at(const_cast<std::uint32_t&>(source->offer_size)).load(std::memory_order_seq_cst);
  return std::string(source->offer, std::min<std::size_t>(size, kOfferBytes));
}

bool ShmInbox::has_offer(int from) const noexcept {
  return shm::at(slot(from)->offer_size).load(std::memory_order_seq_cst) != 0;
}

std::uint32_t ShmInbox::epoch() const noexcept {
  return shm::at(header()->epoch).load(std::memory_order_seq_cst);
}

void ShmInbox::wait(std::uint32_t seen, Deadline until) noexcept {
  shm::at(header()->sleepers).fetch_add(1, std::memory_order_seq_cst);
  shm::futex_wait(&header()->epoch, seen, until);
  shm::at(header()->sleepers).fetch_sub(1, std::memory_order_seq_cst);
}

// The epoch counts posts: a waiter reads it before it looks at the slots and sleeps only while it
// has not moved since, so every post moves it — unlike a channel's notify (shm::notify), whose
// waiters look again after counting themselves in. Posts are rare (a channel's set-up).
void ShmInbox::wake() noexcept {
  shm::at(header()->epoch).fetch_add(1, std::memory_order_seq_cst);
  if (shm::at(header()->sleepers).load(std::memory_order_seq_cst) != 0)
    shm::futex_wake(&header()->epoch);
}

}  // namespace rankmesh
