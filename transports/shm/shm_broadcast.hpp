// ShmBroadcastRing: one writer and several readers on one node, through a shared-memory segment
// of slots — the message-queue broadcaster that Python engines use to hand the scheduler's
// output to every worker of a TP group each step. The writer copies an object into the ring
// once, whatever the number of readers; every reader copies it out and acknowledges it. A slot
// is written again only once every reader has acknowledged what it held, so a slow reader holds
// the writer back rather than losing messages. An object larger than a slot travels as
// consecutive chunks, each in its own slot.
//
// Set-up: the writer create()s the ring for a number of readers and hands its name to each of
// them (rankmesh sends it over the per-pair channel); each reader open()s it with its index.
// The ring is a memfd that the writer offers until every reader has attached
// (shm_segment.hpp), so nothing is ever left in /dev/shm. A writer about to go away while a
// reader may still attach calls wait_attached() first.
//
// Waits spin briefly, then park on a futex in the segment, checking the other side's liveness
// through a pidfd: a reader that dies fails the writer's wait for its acknowledgement, a writer
// that dies fails a reader's wait for data (what it wrote before is still delivered). Bytes in
// the segment that make no sense close the ring with a message that says what was wrong.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "deadline.hpp"
#include "shm/shm_segment.hpp"

namespace rankmesh {

struct ShmBroadcastOptions {
  // Slots in the ring and the bytes one slot carries (writer only). An object of up to
  // slots * slot_bytes can be in flight without waiting for readers.
  std::size_t slots = 8;
  std::size_t slot_bytes = std::size_t{64} << 10;
  // The largest object a reader accepts; a larger announced size is malformed (reader), and the
  // writer refuses to send one (Error(limit_exceeded)).
  std::size_t max_object_bytes = std::size_t{1} << 30;
  // Names the other side(s) in errors: a reader names its writer ("rank 0"); the writer names
  // reader i by reader_names[i] when given ("rank 3"), else "reader i".
  std::string writer_name = "the writer";
  // The writer's pid as its peers know it (reader only; 0: not checked): a reader opens only a
  // ring that this process offers.
  int writer_pid = 0;
  std::vector<std::string> reader_names;
  // How long a wait spins before it parks (unset: the process's SpinPolicy, parker.hpp), and
  // how often a parked wait checks the other side.
  std::optional<std::chrono::nanoseconds> spin_for;
  std::chrono::nanoseconds liveness_interval = std::chrono::milliseconds(50);
  // Gets one line per failure worth an operator's attention. Default: a line on stderr.
  std::function<void(const std::string&)> log;
};

class ShmBroadcastRing {
  struct Private {};

public:
  static constexpr int kMaxReaders = 48;

  struct Created;
  // A ring that this process writes, for `readers` readers (1..kMaxReaders). Throws
  // Error(invalid_argument) for impossible options, std::system_error when the segment cannot
  // be made.
  static Created create(int readers, ShmBroadcastOptions options = {});
  // Attaches to the ring `name` as reader `reader`. Throws Error(malformed) for a name that is
  // not a segment's, Error(peer_failed) for a segment that is not a broadcast ring or has no
  // free reader `reader` (out of range or already taken); std::system_error when it cannot be
  // opened.
  static std::unique_ptr<ShmBroadcastRing> open(const std::string& name, int reader,
                                                ShmBroadcastOptions options = {});

  ShmBroadcastRing(Private, int reader, std::string name, shm::Mapping mapping,
                   ShmBroadcastOptions options);
  // Closes the ring (unless it is closed already), stops offering it, unmaps. What was written
  // stays readable for readers attached by then.
  ~ShmBroadcastRing();
  ShmBroadcastRing(const ShmBroadcastRing&) = delete;
  ShmBroadcastRing& operator=(const ShmBroadcastRing&) = delete;

  // Writer only: hands `size` bytes under `tag` to every reader; returns once the last chunk is
  // in the ring, not when it is read. Throws ChannelTimeout when a reader leaves the ring full
  // until the deadline (readers drop an object whose rest never comes), ChannelClosed once the
  // ring is closed or a reader died.
  void write(std::uint64_t tag, const std::uint8_t* data, std::size_t size, Deadline deadline);
  // Reader only: the next whole object into `out`, its tag into `tag`. False at the deadline
  // (a partly read object is kept for the next call). Throws ChannelClosed once the ring is
  // closed and nothing more is in it, or the writer died.
  bool read(std::uint64_t& tag, std::vector<std::uint8_t>& out, Deadline deadline);
  // Writer only: waits until every reader has taken everything written; false at the deadline.
  bool flush(Deadline deadline);
  // Writer only: waits until every reader has attached (true), or the ring is closed or the
  // deadline passes (false). A writer that is done calls it before it goes away, so that a
  // reader that learned of the ring late can still attach and read what was written.
  bool wait_attached(Deadline deadline);
  // Thread-safe; may run while another thread waits in write() or read(), which then throw.
  void close(const std::string& reason);

  bool is_writer() const noexcept { return reader_ < 0; }
  int readers() const noexcept;
  const std::string& name() const noexcept { return name_; }

private:
  struct Control;
  struct Slot;

  Slot& slot(std::uint64_t chunk) const noexcept;
  template <class Ready>
  bool wait(Ready&& ready, std::uint32_t& epoch, std::uint32_t& sleepers, Deadline deadline);
  void check_others();
  std::string reader_name(int reader) const;
  bool closed() const noexcept;
  std::string closed_reason() const;
  [[noreturn]] void fail(const std::string& why);
  std::uint64_t slowest_ack(int* slowest) const noexcept;
  bool all_attached() const noexcept;
  void stop_offering_once_attached() noexcept;

  const int reader_;  // -1: the writer
  const std::string name_;
  const shm::Mapping mapping_;
  ShmBroadcastOptions options_;
  Control* const control_;
  const std::size_t slots_;
  const std::size_t slot_bytes_;
  int handoff_ = -1;  // writer: the memfd it offers until every reader has attached

  // Writer: the next chunk to write; the readers, watched once they have attached.
  std::uint64_t next_ = 0;
  std::vector<shm::ProcessWatch> reader_watch_;
  // Reader: the next chunk to read; the object being assembled; the writer.
  std::uint64_t expected_ = 0;
  bool assembling_ = false;
  std::uint64_t assembling_tag_ = 0;
  std::size_t assembled_ = 0;
  std::vector<std::uint8_t> object_;
  shm::ProcessWatch writer_watch_;
  Clock::time_point next_check_{};
};

struct ShmBroadcastRing::Created {
  std::unique_ptr<ShmBroadcastRing> ring;
  std::string name;  // for open() on the readers' side
};

}  // namespace rankmesh
