// The inproc transport: a bounded single-producer single-consumer ring of frames between two
// ranks of one process. Tensors change hands as shared references, so a donated payload is never
// copied (whether to copy one that is not donated is the sender's decision, made above). A small
// frame of host tensors (an object, an acknowledgement, a one-tensor dict of a few hundred bytes)
// travels as bytes in its slot instead, its tensors made by the receiver's allocator.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "channel.hpp"
#include "parker.hpp"

namespace rankmesh {

class InprocChannel final : public Channel {
public:
  static constexpr std::size_t kSlots = 64;
  static constexpr std::size_t kSlotBytes = 640;  // each, the last kSlots * kSlotBytes of the object

  // Bytes of metadata, descriptors and payloads a frame may take to travel in its slot.
  static constexpr std::size_t kInlineBytes = 604;

  static constexpr ChannelTraits kTraits{.shares_tensors = true,
                                         .encodes_dicts_up_to = kInlineBytes,
                                         .carries_device_memory = true,
                                         .transport = "inproc"};

  // `allocate`: where the receiver's tensors of small frames come from (null: Tensor::empty).
  explicit InprocChannel(Allocator allocate = nullptr);

  using Channel::send;
  // A frame goes into a slot whole: only `start_by` bounds the wait.
  void send(Frame& frame, Deadline start_by, Deadline deadline) override;
  bool recv(Frame& frame, Deadline deadline) override;
  void close(const std::string& reason) override;

private:
  [[noreturn]] void throw_closed() const;

  // A small frame is copied into its slot: the lines of the slot it fills are all the consumer
  // reads. Handing over whole Frames moved ~4 lines of slot (written by both sides), the
  // metadata buffer and the tensors' memory and control blocks between the cores each message,
  // and the consumer freed what the producer allocated: an object round trip between two
  // threads took 1.86 us against 1.17 over shm's byte ring. A slot is kSlotBytes: sized for
  // the (f) row of 512 bytes (metadata, a descriptor and the payload).
  static constexpr std::uint32_t kWhole = ~std::uint32_t{0};  // the frame is in (*whole_)[slot]

  // A slot: a whole number of 128-byte line pairs (x86's adjacent-line prefetcher fetches
  // lines in pairs), so neighbouring slots share none. In `bytes`: the metadata, then per
  // tensor its dtype (u8), rank (u8) and dimensions (i64 each), then the payloads in order.
  //
  // Nothing in a slot is initialized: the producer writes what the consumer reads first. A world
  // connects every pair of its ranks, most of which never talk, and initialized slots made every
  // channel resident (53 KiB each: an embedded world of 64 ranks held 206 MiB of them).
  struct alignas(128) Slot {
    Slot() noexcept {}  // leaves the memory untouched (see above)
    union {
      FrameHeader header;  // begins its life when the producer writes a frame (construct_at)
    };
    std::uint32_t size;  // bytes used in `bytes`, or kWhole
    std::uint32_t metadata_bytes;
    std::uint32_t tensors;
    std::uint8_t bytes[kInlineBytes];
  };
  static_assert(sizeof(Slot) == kSlotBytes);

  // Writes `frame` into `slot` as bytes if it is small enough and all of it is ready host
  // memory; false (the slot untouched) otherwise.
  static bool write_inline(Frame& frame, Slot& slot) noexcept;
  // The frame in `slot`, its tensors from allocate_; throws what the allocator throws, with
  // nothing consumed.
  void read_inline(const Slot& slot, Frame& frame);

  // Frames with tensors, a dict, a loan or more metadata, by slot: made by the producer for the
  // first such frame (published to the consumer by that frame's tail_ store), so that a channel
  // that never carries one holds no Frames.
  std::unique_ptr<std::array<Frame, kSlots>> whole_;
  // head_: next slot the consumer reads; tail_: next slot the producer writes. Each is written
  // by one side only; they sit on their own cache lines so the sides do not false-share. Beside
  // each, where its side last ran: a spinning waiter offers its core (parker.hpp) only to a
  // peer that last ran on it — offered every 64 polls, a sched_yield whose system call costs
  // microseconds in a paravirtualized guest delayed every message the waiter was spinning for.
  alignas(64) std::atomic<std::uint64_t> head_{0};
  std::atomic<std::uint32_t> consumer_cpu_{0};  // where the consumer last ran (note_cpu)
  alignas(64) std::atomic<std::uint64_t> tail_{0};
  std::atomic<std::uint32_t> producer_cpu_{0};  // where the producer last ran
  // The producer's copy of head_, read again only when it says the ring is full: reading head_
  // on every send took its line from the consumer's core each message, and the consumer's next
  // store to it waited for the line to come back.
  std::uint64_t seen_head_ = 0;
  const Allocator allocate_;
  std::vector<TensorDescriptor> described_;  // the consumer's, for read_inline
  alignas(64) std::atomic<bool> closed_{false};
  Parker not_empty_;
  Parker not_full_;
  mutable std::mutex reason_mutex_;  // close() is rare; the reason is read only after closed_
  std::string reason_;
  // Last: the lines a channel touches before its first frame (above) share the object's first
  // page, the slots' pages stay untouched until frames fill them.
  std::array<Slot, kSlots> slots_;
};

}  // namespace rankmesh
