// One direction of one peer pair: frames in FIFO order. Every transport (inproc, shm, tcp)
// implements this; the coordinators above never know which one they talk through.
#pragma once

#include <cstddef>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>

#include "deadline.hpp"
#include "frame.hpp"

namespace rankmesh {

// Receives one line per event worth an operator's attention (a link that failed, a dropped
// outsider, a peer's malformed data). Called from the thread that noticed; must not block.
using LogFn = std::function<void(const std::string&)>;

// What a channel does with the tensors it carries: the coordinators decide copies from this,
// never from the transport's name.
struct ChannelTraits {
  // The receiver may get the sender's tensors themselves (one process; small frames may still
  // travel as bytes): a sender that must keep its caller's tensor untouched copies it first,
  // and nothing is ever released.
  bool shares_tensors = false;
  // Where shares_tensors: a tensor dict that was not donated and whose encoding takes at most
  // this many bytes (its payloads included; estimated from above) is encoded like any frame,
  // so that it travels as bytes the receiver makes its own objects from (inproc: in the
  // channel's slot). Any other dict is handed over whole (Frame::dict, nothing encoded).
  std::size_t encodes_dicts_up_to = 0;
  // Payloads of more bytes than this are still read from the sender's tensors after send()
  // returns, until wait_released(); smaller ones are copied before send() returns.
  std::size_t copies_up_to = std::numeric_limits<std::size_t>::max();
  // recv() reads the payloads of the frame that land() names straight into its tensors.
  bool lands_payloads = false;
  // Payloads may live in device memory (touched only through the device's copies).
  bool carries_device_memory = false;
  // send() writes each of the frame's chunked payloads (Frame::chunked) chunk by chunk as its
  // chunks become ready, so a payload still being copied to host is already on its way.
  bool writes_progressively = false;
  // send() copies the frame's borrowed payloads (Frame::borrowed; beyond copies_up_to) itself
  // before it returns, the receiver reading each part as soon as it is copied, so that the two
  // copies overlap instead of following each other.
  bool copies_while_sending = false;
  // The transport's name ("inproc", "shm", "tcp"), as timelines show it; static storage.
  const char* transport = "";

  // Whether a payload of `nbytes` may still be read after send() returns.
  bool reads_after_send(std::size_t nbytes) const noexcept {
    return shares_tensors || nbytes > copies_up_to;
  }
  // Whether wait_released() can end the channel's hold on what was sent.
  bool lends() const noexcept { return !shares_tensors; }
};

class Channel {
public:
  virtual ~Channel() = default;

  // Hands `frame` over. Its buffers are swapped with spent ones (so the caller's vectors keep
  // their capacity and the steady state allocates nothing); its tensors are moved. Waits while
  // the channel is full: until `start_by` for room to begin the frame — ChannelTimeout then,
  // with nothing of it sent, so the caller may try again (a sender waiting in slices) — and
  // until `deadline` for room for the rest of a frame begun — ChannelTimeout then closes the
  // channel, whose stream is cut. Throws ChannelClosed once closed.
  virtual void send(Frame& frame, Deadline start_by, Deadline deadline) = 0;
  // Both waits end at `deadline`.
  void send(Frame& frame, Deadline deadline) { send(frame, deadline, deadline); }

  // Takes the next frame into `frame`, swapping buffers the same way. Returns false at the
  // deadline; throws ChannelClosed once closed and drained.
  virtual bool recv(Frame& frame, Deadline deadline) = 0;

  // Fails every waiter and every later call with `reason` (a peer died, the world aborts).
  virtual void close(const std::string& reason) = 0;

  // Where the payloads of a frame matching `landing` go, for the recv() calls until the next
  // land() (null: nowhere special). The caller keeps `landing` alive meanwhile. Only channels
  // whose traits say lands_payloads honour it.
  virtual void land(const Landing* landing) noexcept { (void)landing; }

  // Waits until nothing sent so far is read from the sender's tensors any more (shm: the
  // receiver has taken it; tcp: the kernel has it). False at the deadline; throws ChannelClosed
  // once closed. Returns at once where nothing is lent (traits().lends(): never).
  virtual bool wait_released(Deadline deadline) {
    (void)deadline;
    return true;
  }

  const ChannelTraits& traits() const noexcept { return traits_; }

  // The process at the other end, where the transport checked which one it is (shm), else 0.
  virtual int peer_pid() const noexcept { return 0; }

protected:
  explicit Channel(ChannelTraits traits) : traits_(traits) {}

private:
  const ChannelTraits traits_;
};

struct ChannelClosed : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ChannelTimeout : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace rankmesh
