// TcpLink: the tcp transport's one persistent, authenticated connection per peer pair, carrying
// frames both ways. A frame goes out as one scatter-gather write (header, metadata, payloads straight
// from the tensors); the receiving thread reads the socket itself, payloads straight into fresh
// tensors. Bad input from a peer closes that one link with a logged error naming the peer.
//
// A borrowed payload (Frame::borrowed: the caller's memory) goes straight from there; where the
// peer does not take the whole frame at once, the bytes left for the writer thread are copied
// first, so send() never returns with the caller's memory still to be read.
//
// A chunked payload (Frame::chunked: a device tensor being copied to host chunk by chunk) is
// written chunk by chunk as each chunk's copy completes, so the copy of chunk k+1 overlaps the
// sending of chunk k; the bytes on the wire are the same as for any payload. Nothing leaves
// before the frame's first chunk is in host memory, so a copy that fails there (a failed producer
// or stream) fails the send with the link intact. A later chunk whose copy fails or misses the
// deadline fails the send too, and closes the link: part of the frame has left and the rest
// cannot be sent, and a closed link is what tells the peer (never bytes that were not copied).
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "auth.hpp"
#include "channel.hpp"
#include "frame_codec.hpp"

namespace rankmesh {

// Starts a thread running `body`; throws std::system_error when it cannot (as std::thread does).
using ThreadStarter = std::function<std::thread(std::function<void()> body)>;

struct TcpOptions {
  FrameLimits limits;  // what this side accepts (and checks before it sends)
  Allocator allocator;  // where received tensors land; default Tensor::empty
  LogFn log;            // default: a line on stderr
  // Starts the link's writer thread; default std::thread (tests make it fail).
  ThreadStarter start_thread;
};

// One connected, authenticated socket between this rank and `peer()`. send() and recv() may run
// on different threads at once. To hand a channel out as a shared_ptr, alias the link:
// std::shared_ptr<Channel>(link, &link->outbound()).
class TcpLink {
public:
  // The writer thread may still read payloads after send() returns; recv() reads payloads
  // straight into a landing's tensors.
  // Borrowed payloads (Frame::borrowed) go from the caller's memory; only what the writer
  // thread would still read after send() returns is copied first.
  static constexpr ChannelTraits kOutboundTraits{.copies_up_to = 0, .writes_progressively = true,
                                                 .copies_while_sending = true,
                                                 .transport = "tcp"};
  static constexpr ChannelTraits kInboundTraits{.copies_up_to = 0, .lands_payloads = true,
                                                .transport = "tcp"};

  // Takes ownership of `fd`, a connected socket whose peer authenticated as `peer`.
  TcpLink(int fd, PeerIdentity peer, TcpOptions options = {});
  // Closes the socket; no call may still be running on the link.
  ~TcpLink();
  TcpLink(const TcpLink&) = delete;
  TcpLink& operator=(const TcpLink&) = delete;

  // Frames to the peer (send only) and from it (recv only). Channel::close on either closes
  // the whole link.
  Channel& outbound() noexcept;
  Channel& inbound() noexcept;

  const PeerIdentity& peer() const noexcept { return peer_; }
  // "rank 3 (10.0.0.2:41234)".
  const std::string& peer_name() const noexcept { return peer_name_; }

  // Shuts the socket down: calls in flight and every later call throw ChannelClosed(reason).
  // Returns once the writer thread no longer reads a frame handed to it, so that the caller may
  // change memory it lent (the rest of that frame is never sent).
  void close(const std::string& reason);
  bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }

private:
  class Outbound;
  class Inbound;

  // A span of unsent_ that may be written only once `ready` has completed: one chunk, bytes
  // [begin, end) of tensor `tensor` of the frame.
  struct Gate {
    std::size_t span = 0;
    std::shared_ptr<Event> ready;
    std::size_t tensor = 0;
    std::size_t begin = 0;
    std::size_t end = 0;
  };

  void send(Frame& frame, Deadline start_by, Deadline deadline);
  // Hands the rest of the frame being sent, from unsent_[first], to the writer thread, with
  // everything it reads. Closes the link (ChannelClosed) when the thread cannot be started.
  void hand_to_writer(Frame& frame, std::size_t first);
  // Gives each borrowed payload with bytes still in unsent_ from `first` on memory of its own,
  // holding those bytes, and points the spans there.
  void copy_unsent_borrowed(Frame& frame, std::size_t first);
  bool recv(Frame& frame, Deadline deadline);
  // Waits until the writer thread has finished the frame it holds (false at the deadline);
  // throws ChannelClosed once closed.
  bool finish_writing(Deadline deadline);
  // Closes the link because of `why` (a peer's bad frame, EOF, a socket error), logs it, throws
  // ChannelClosed.
  [[noreturn]] void fail(const std::string& why);
  // Closes the link with a logged reason (the first one wins); does not throw.
  void close_with_error(const std::string& why);
  // Writes the rest of unsent_ from unsent_[first]; returns why it could not ("" when done or
  // when the link was closed meanwhile).
  std::string write_rest(std::size_t first);
  // One sendmsg of unsent_[first, end), advancing `first` past what it wrote.
  ssize_t write_some(std::size_t& first, std::size_t end);
  // unsent_ and gates_ for `frame` from the encoder's `spans`: each chunked payload's span cut
  // into its chunks, each gated by its chunk's event.
  void lay_out(const Frame& frame, std::span<const iovec> spans);
  // Passes the gates whose chunks are ready; returns where writing must stop for now: the span
  // of the first gate not passed, else unsent_.size(). `failed`: that gate's copy failed.
  std::size_t writable_end(std::exception_ptr& failed);
  // "tensor 0's bytes [0, 4194304)".
  static std::string describe(const Gate& gate);
  // Waits for `gate`'s chunk until the deadline; a copy that failed or did not finish in time
  // fails the send: the link is closed when part of the frame has left (`sent_any`), and the
  // error names the chunk. Late before anything left: ChannelTimeout (the send may be retried).
  void wait_chunk(const Gate& gate, Deadline deadline, bool sent_any);
  void writer_loop();
  [[noreturn]] void throw_closed() const;

  const int fd_;
  const PeerIdentity peer_;
  std::string peer_name_;
  LogFn log_;
  FrameLimits limits_;
  ThreadStarter start_thread_;
  Allocator copy_allocator_;  // memory for what the writer sends of borrowed payloads

  std::atomic<bool> closed_{false};
  mutable std::mutex close_mutex_;
  std::string reason_;

  std::mutex send_mutex_;
  FrameEncoder encoder_;
  std::vector<iovec> unsent_;
  std::vector<Gate> gates_;     // in span order; the writer's with unsent_
  std::size_t open_gates_ = 0;  // gates_[0, open_gates_) have passed
  // A frame the peer did not take at once is finished by the writer thread, so that send never
  // waits for the peer to read (two ranks sending to each other before receiving, as every
  // collective does, would otherwise wait on each other). The next send waits for it before it
  // encodes, so the encoder's buffers and unsent_ are the writer's until then. What unsent_
  // points into is the link's too: the frame's tensors and its metadata buffer, below.
  std::mutex writer_mutex_;
  std::condition_variable writer_cv_;
  bool writing_ = false;
  bool stop_writer_ = false;
  std::size_t writing_first_ = 0;
  std::vector<Tensor> writing_tensors_;
  std::vector<std::uint8_t> writing_metadata_;
  std::thread writer_;
  std::uint64_t next_seq_ = 0;

  std::mutex recv_mutex_;
  FrameDecoder decoder_;
  std::unique_ptr<std::uint8_t[]> staging_;  // bytes read past the current part
  std::size_t staged_begin_ = 0;
  std::size_t staged_end_ = 0;

  std::unique_ptr<Channel> outbound_;
  std::unique_ptr<Channel> inbound_;
};

// The log, or stderr when there is none.
LogFn log_or_stderr(LogFn log);

}  // namespace rankmesh
