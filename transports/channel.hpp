// One direction of one peer pair: frames in FIFO order. Every transport (inproc, shm, tcp)
// implements this; the coordinators above never know which one they talk through.
#pragma once

#include <cstddef>
#include <string>

#include "deadline.hpp"
#include "frame.hpp"

namespace rankmesh {

class Channel {
public:
  virtual ~Channel() = default;

  // Hands `frame` over. Its buffers are swapped with spent ones (so the caller's vectors keep
  // their capacity and the steady state allocates nothing); its tensors are moved. Waits while
  // the channel is full. Throws ChannelClosed once closed, ChannelTimeout at the deadline.
  virtual void send(Frame& frame, Deadline deadline) = 0;

  // Takes the next frame into `frame`, swapping buffers the same way. Returns false at the
  // deadline; throws ChannelClosed once closed and drained.
  virtual bool recv(Frame& frame, Deadline deadline) = 0;

  // Fails every waiter and every later call with `reason` (a peer died, the world aborts).
  virtual void close(const std::string& reason) = 0;

  // Where the payloads of a frame matching `landing` go, for the recv() calls until the next
  // land() (null: nowhere special). The caller keeps `landing` alive meanwhile. Channels that
  // read payloads into memory themselves (shm, tcp) honour it; inproc hands over the sender's
  // tensors and ignores it.
  virtual void land(const Landing* landing) noexcept { (void)landing; }

  // Whether the bytes of a host payload of `nbytes` may still be read after send() returns
  // (inproc hands the tensor itself over, shm lends large payloads, tcp may finish a frame on
  // its writer thread). Where not, send() has copied them by the time it returns, and a sender
  // that must keep the caller's tensor untouched needs no copy of its own.
  virtual bool keeps_payload(std::size_t nbytes) const noexcept {
    (void)nbytes;
    return true;
  }

  // Whether release() can end the channel's hold on what was sent (inproc cannot: the receiver
  // gets the sender's tensor itself).
  virtual bool releases_payloads() const noexcept { return false; }
  // Waits until nothing sent so far is read from the sender's tensors any more (shm: the
  // receiver has taken it; tcp: the kernel has it). False at the deadline; throws ChannelClosed
  // once closed. Only where releases_payloads().
  virtual bool release(Deadline deadline) {
    (void)deadline;
    return true;
  }
};

struct ChannelClosed : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ChannelTimeout : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace rankmesh
