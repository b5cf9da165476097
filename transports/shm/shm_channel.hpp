// The shm transport: one direction between two processes of one node, through a POSIX
// shared-memory segment that holds a control block and a byte ring.
//
// Set-up: the receiving side create()s the segment and publishes its name (through the
// rendezvous); the sending side open()s it by name. The segment is a memfd that the receiver
// offers until the sender has attached (shm_segment.hpp), so nothing is ever left in /dev/shm,
// whichever side is killed when. Both sides may then call wait_peer() to finish the handshake.
//
// A frame travels through the ring in the format of every byte transport (frame_codec.hpp): a
// header, one descriptor per tensor, the metadata, then each payload in tensor order — inline
// (copied through the ring) when it is small, else lent: its address and length in the
// sender's memory, which the receiver reads with
// process_vm_readv straight into its receive tensor: one copy, and send() returns without
// waiting for the receiver (the sender keeps those tensors alive until the receiver's counter
// has passed the record). Medium payloads, which the sender must copy anyway (its caller may
// change them once send() returns), go inline whenever the frame fits the ring's free room: the
// receiver copies them out while the sender is still copying them in, and a copy out of shared
// memory is 1.5-3x as fast as process_vm_readv (which pins the sender's pages on every call).
// Where the frame does not fit, they are copied into memory of the sender's and lent, so a
// sender never waits for a receiver that is busy itself. A large payload the caller still owns
// (Frame::borrowed) is lent from memory of the sender's that send() fills after the frame is
// out, a part at a time: the receiver reads each part as soon as a counter in the control
// page (lent_ready) says it is there, so the sender's copy and the receiver's read overlap.
// Where the kernel refuses cross-process reads (ptrace policy), large payloads go inline too,
// pipelined through the ring in chunks.
//
// Every wait spins briefly, then parks on a futex in the segment, and watches the peer through
// a pidfd: a peer that dies makes every call fail within ~50 ms with ChannelClosed naming it.
// A peer that writes nonsense into the segment gets the channel closed with a message saying
// what was wrong; this process goes on.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "buffer_pool.hpp"
#include "channel.hpp"
#include "frame_codec.hpp"
#include "shm/shm_segment.hpp"

namespace rankmesh {

struct ShmOptions {
  // Bytes the ring may grow to (creator only); rounded up to a power of two, at least 64 KiB.
  // The segment is sized for it, but only the pages in use are ever made.
  std::size_t ring_bytes = std::size_t{4} << 20;
  // Bytes of the ring at first (creator only; power of two, 64 KiB to ring_bytes). The sender
  // doubles it whenever a frame would have to wait for room, so a ring follows its traffic.
  std::size_t initial_ring_bytes = std::size_t{64} << 10;
  // Payloads up to this size always go inline, waiting for room in the ring if need be (sender
  // only).
  std::size_t inline_threshold = std::size_t{64} << 10;
  // Payloads up to this size (and above inline_threshold) are copied before send() returns:
  // inline when the whole frame fits the ring's free room at once, else into a buffer from
  // `allocator` that is lent. Larger ones are lent as they are (memory the caller gave away),
  // or, borrowed (Frame::borrowed), copied into such a buffer while the receiver reads it
  // (sender only; up to inline_threshold: no copies beyond what always goes inline).
  std::size_t copy_threshold = std::size_t{2} << 20;
  // false: every payload goes through the ring, two copies (sender only; for tests, benchmarks).
  bool single_copy = true;
  // Payloads sent by reference that the receiver has not read yet, at most (sender only): beyond
  // either bound send() waits. One frame is always allowed, however large.
  std::size_t max_pending_frames = 64;
  std::size_t max_pending_bytes = std::size_t{512} << 20;
  // What the receiver accepts in one frame; beyond it the frame is malformed. The sender checks
  // its frames against the same bounds (Error(limit_exceeded)).
  FrameLimits limits;
  // Where received tensors land, and the sender's copies of payloads it lends; default:
  // shared_buffer_pool().
  Allocator allocator;
  // Names the other side in errors: "rank 3".
  std::string peer_name = "peer";
  // The pid the peer announced (0: not checked). The sender opens only a segment that process
  // offers; the receiver fails the channel when another process attaches.
  int peer_pid = 0;
  // How long a wait spins before it parks (unset: the process's SpinPolicy, parker.hpp), and
  // how often a parked wait checks the peer.
  std::optional<std::chrono::nanoseconds> spin_for;
  std::chrono::nanoseconds liveness_interval = std::chrono::milliseconds(50);
  // Gets one line per failure worth an operator's attention (malformed data from the peer).
  // Default: a line on stderr.
  std::function<void(const std::string&)> log;
};

// Payloads up to this many bytes are copied by send() (ChannelTraits::copies_up_to).
inline std::size_t copied_up_to(const ShmOptions& options) noexcept {
  return std::max(options.inline_threshold, options.copy_threshold);
}

// A shm channel's traits (`receiving`: its receiving end), for the channel and for whoever
// describes one before it is made.
inline ChannelTraits shm_traits(const ShmOptions& options, bool receiving) noexcept {
  return ChannelTraits{.copies_up_to = copied_up_to(options), .lands_payloads = receiving,
                       .copies_while_sending = true, .transport = "shm"};
}

class ShmChannel final : public Channel {
  struct Private {};

public:
  // The segment layout, for readers of a dump and for tests that play a broken peer. All
  // integers are native-endian (both ends run on one node).
  struct Layout {
    static constexpr std::size_t kControlBytes = 4096;  // then the ring
    static constexpr std::size_t kTailOffset = 64;      // u64, bytes the sender has published
    static constexpr std::size_t kHeadOffset = 128;     // u64, bytes the receiver has consumed
    // The frames in the ring: frame_codec.hpp's format, lent payloads included.
  };

  struct Created;

  // Creates a segment with this process as the receiver. Throws Error(invalid_argument) for
  // impossible options, std::system_error when the segment cannot be made.
  static Created create(ShmOptions options = {});
  // Attaches to the segment `name` as its sender. Throws Error(malformed) for a name that is
  // not a segment's, Error(peer_failed) for a segment that is not a rankmesh channel, already
  // has a sender, or fails the checks of shm::open_segment (owner, mode, offered by
  // options.peer_pid): the offer cannot be trusted; std::system_error when it cannot be opened
  // (its receiver has exited or stopped offering it).
  static std::unique_ptr<ShmChannel> open(const std::string& name, ShmOptions options = {});

  ShmChannel(Private, bool receiver, std::string name, void* base, std::size_t mapped,
             ShmOptions options);
  // Tells the peer the channel is closed (unless it is already), drops payloads still lent to
  // the receiver, stops offering the segment, unmaps.
  ~ShmChannel() override;
  ShmChannel(const ShmChannel&) = delete;
  ShmChannel& operator=(const ShmChannel&) = delete;

  // Sender only. Throws Error(invalid_argument) for an undefined or non-host tensor,
  // Error(limit_exceeded) for a frame beyond the options' bounds, ChannelTimeout when a tensor's
  // ready event does not complete before `start_by`; nothing is sent then.
  using Channel::send;
  void send(Frame& frame, Deadline start_by, Deadline deadline) override;
  // Receiver only. Tensors come from the allocator. A deadline that passes in the middle of a
  // frame keeps what has arrived; the next recv() goes on from there.
  bool recv(Frame& frame, Deadline deadline) override;
  // Thread-safe; may run while another thread waits in send() or recv(), which then throw.
  void close(const std::string& reason) override;
  // Payloads up to copy_threshold are copied by send(), into the ring or a buffer it lends
  // (traits).
  // Withdrawn (null) in the middle of a landed payload, the rest of the frame goes to memory of
  // its own: the receive that set the landing has ended.
  void land(const Landing* landing) noexcept override;
  bool wait_released(Deadline deadline) override { return receiver_ || flush(deadline); }

  // The handshake after set-up. Receiver: waits until the sender has attached, stops offering
  // the segment, and checks whether it may read the sender's memory. Sender: waits until the receiver
  // has done that. False at the deadline. Optional — without it the first large payloads may go
  // inline — but it lets both sides learn early that the peer is there.
  bool wait_peer(Deadline deadline);
  // Sender only: waits until the receiver has taken every frame sent so far (false at the
  // deadline), so that this process may exit without withdrawing payloads it lent.
  bool flush(Deadline deadline);

  // Receiver: from now on only process `pid` may be the sender (ShmOptions::peer_pid, for a
  // receiver that learns the pid after create()). Call it before wait_peer() and recv().
  // Until it attaches, a wait fails as soon as that process has died.
  void expect_sender(int pid);
  // Receiver, before the sender attaches: checks whether it may read the memory of process `pid`
  // on the 8 bytes at `address`, which should hold `expected` (a lazily made channel's maker
  // learns them from the sender's inbox), so that the sender knows from its first frame whether
  // it may lend payloads, with no handshake.
  void probe_sender(int pid, std::uint64_t address, std::uint64_t expected) noexcept;

  // Makes the pages a first frame touches (the control page, the start of the ring) in this
  // process now, so that the frame does not wait for their page faults (tens of µs each in a
  // VM). For a side that has time now: a thread making the channel ahead of its first use.
  void prefault() noexcept;

  bool is_receiver() const noexcept { return receiver_; }
  const std::string& name() const noexcept { return name_; }
  // The other side's pid; 0 while no sender has attached.
  int peer_pid() const noexcept override;
  // Whether large payloads travel with one copy (known once the receiver has checked).
  bool single_copy() const noexcept;

private:
  struct Control;   // the segment's first page
  struct Incoming;  // a frame partly received
  struct Borrowed {  // a payload of the caller's, copied into memory of ours while sending
    std::size_t index;  // in the frame
    Tensor source;      // the caller's
  };
  struct Pending {  // payloads lent to the receiver
    std::uint64_t end;  // they are read once the receiver's counter reaches this
    std::size_t bytes;
    std::vector<Tensor> tensors;
  };

  template <class Ready>
  bool wait(Ready&& ready, std::uint32_t* epoch, std::uint32_t* sleepers, Deadline deadline);

  std::string who() const;
  void check_peer(bool force);
  bool peer_alive() const noexcept;
  void on_attached();
  void stop_offering() noexcept;
  void probe_peer_memory(int pid, std::uint64_t address, std::uint64_t expected) noexcept;
  [[noreturn]] void peer_died();
  bool closed() const noexcept;
  std::string closed_reason() const;
  [[noreturn]] void throw_closed();
  [[noreturn]] void fail(const std::string& why);
  void withdraw_lent() noexcept;

  void write_ring(std::uint64_t pos, const void* src, std::size_t n) noexcept;
  void read_ring(std::uint64_t pos, void* dst, std::size_t n) const noexcept;
  void publish_tail() noexcept;
  void publish_head() noexcept;
  std::uint64_t raw_head() const noexcept;
  std::uint64_t raw_tail() const noexcept;
  void refresh_head();
  void refresh_tail();

  void release_consumed();
  // Whether `bytes` fit after what we wrote while the receiver has consumed up to `head`
  // (inline: an exported member defined in the .cpp is called, not inlined, on the send path).
  bool fits_after(std::uint64_t head, std::size_t bytes) const noexcept {
    return head + ring_bytes_ >= tail_ + bytes;
  }
  bool room_for(std::size_t bytes);
  bool head_frees(std::size_t bytes) const noexcept;
  void wait_space(std::size_t bytes, Deadline deadline, const char* what);
  bool fits_at_once(std::size_t record);
  bool copy_to_lend(Frame& frame);
  void take_borrowed(Frame& frame, std::size_t lend_above);
  void give_back_borrowed(Frame& frame) noexcept;
  std::size_t make_lent_ready(Frame& frame, std::size_t from, bool copy) noexcept;
  void publish_lent_ready(bool wake) noexcept;
  std::uint64_t raw_lent_ready() const noexcept;
  bool pull_lent(void* dst, std::uint64_t address, std::size_t length, Deadline deadline);
  void grow_for(std::size_t bytes, Deadline deadline);
  void stream_out(const std::uint8_t* src, std::size_t n, Deadline deadline);
  bool start_frame(Deadline deadline);
  bool fill(std::uint8_t* dst, std::size_t n, std::size_t& done, Deadline deadline);
  void pull(void* dst, std::uint64_t address, std::size_t length);

  const bool receiver_;
  const std::string name_;
  std::uint8_t* const base_;
  const std::size_t mapped_;
  ShmOptions options_;
  Control* const control_;
  std::uint8_t* const ring_;
  const std::size_t ring_capacity_;  // what the segment holds
  std::size_t ring_bytes_;           // in use: a power of two, set by the sender, only grows
  std::atomic<int> handoff_{-1};  // receiver: the memfd it offers until the sender attached
  bool broken_ = false;  // this side found the peer's data malformed
  int peer_pid_ = 0;  // once known
  shm::ProcessWatch peer_;
  shm::ProcessWatch announced_;  // receiver: the announced sender, until it attaches
  Clock::time_point next_peer_check_{};

  // Sender.
  std::uint64_t tail_ = 0;            // bytes written
  std::uint64_t published_tail_ = 0;  // of which the receiver may read
  // The receiver's head as last read. A send reads the shared one only when this one says the
  // frame does not fit (room_for) or lent payloads wait for it: reading it on every send took
  // its line from the receiver's core each message, and the receiver's next publish_head then
  // waited for the line to come back (two transfers between the cores per message).
  std::uint64_t seen_head_ = 0;
  std::uint64_t link_seq_ = 0;
  std::uint64_t probe_word_ = 0;  // the receiver reads it to learn whether it may read us
  std::deque<Pending> lent_;
  std::size_t lent_bytes_ = 0;
  std::uint64_t lent_ready_ = 0;     // Control::lent_ready, ours to advance
  std::vector<Borrowed> borrowed_;   // of the frame being sent
  FrameEncoder encoder_;

  // Receiver.
  std::uint64_t head_ = 0;            // bytes consumed
  std::uint64_t published_head_ = 0;  // of which the sender knows
  std::uint64_t seen_tail_ = 0;
  std::uint64_t expected_seq_ = 0;
  std::uint64_t lent_taken_ = 0;  // bytes of lent payloads read whole (Control::lent_ready's count)
  std::unique_ptr<Incoming> incoming_;
  const Landing* landing_ = nullptr;
};

struct ShmChannel::Created {
  std::unique_ptr<ShmChannel> channel;
  std::string name;  // for ShmChannel::open on the sending side: "/proc/<pid>/fd/<fd>#<inode>"
};

}  // namespace rankmesh
