#include "tcp/tcp_link.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <iostream>
#include <list>
#include <system_error>
#include <thread>
#include <utility>

#include "rankmesh/error.hpp"
#include "rankmesh/event.hpp"
#include "parker.hpp"
#include "tcp/socket_io.hpp"

namespace rankmesh {
namespace {

constexpr std::size_t kStagingBytes = 64 * 1024;

std::string message_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an unknown error";
  }
}

Errc code_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return e.code();
  } catch (...) {
    return Errc::device;
  }
}

}  // namespace

class TcpLink::Outbound final : public Channel {
public:
  explicit Outbound(TcpLink& link) : Channel(kOutboundTraits), link_(link) {}
  void send(Frame& frame, Deadline start_by, Deadline deadline) override {
    link_.send(frame, start_by, deadline);
  }
  bool recv(Frame&, Deadline) override {
    throw Error(Errc::invalid_argument, "recv on the outbound tcp channel to " + link_.peer_name());
  }
  void close(const std::string& reason) override { link_.close(reason); }
  bool wait_released(Deadline deadline) override { return link_.finish_writing(deadline); }

private:
  TcpLink& link_;
};

class TcpLink::Inbound final : public Channel {
public:
  explicit Inbound(TcpLink& link) : Channel(kInboundTraits), link_(link) {}
  void send(Frame&, Deadline, Deadline) override {
    throw Error(Errc::invalid_argument, "send on the inbound tcp channel from " + link_.peer_name());
  }
  bool recv(Frame& frame, Deadline deadline) override { return link_.recv(frame, deadline); }
  void close(const std::string& reason) override { link_.close(reason); }
  void land(const Landing* landing) noexcept override {
    std::lock_guard lock(link_.recv_mutex_);
    link_.decoder_.land(landing);
  }

private:
  TcpLink& link_;
};

TcpLink::TcpLink(int fd, PeerIdentity peer, TcpOptions options)
    : fd_(fd),
      peer_(peer),
      peer_name_("rank " + std::to_string(peer.rank) + " (" + net::peer_address(fd) + ")"),
      log_(log_or_stderr(std::move(options.log))),
      limits_(options.limits),
      start_thread_(options.start_thread ? std::move(options.start_thread)
                                         : [](std::function<void()> body) {
                                             return std::thread(std::move(body));
                                           }),
      copy_allocator_(options.allocator ? options.allocator
                                        : [](const Shape& shape, DType dtype) {
                                            return Tensor::empty(shape, dtype);
                                          }),
      decoder_(std::move(options.allocator), options.limits),
      staging_(new std::uint8_t[kStagingBytes]),
      outbound_(std::make_unique<Outbound>(*this)),
      inbound_(std::make_unique<Inbound>(*this)) {
  net::set_nonblocking(fd_);
  net::set_nodelay(fd_);
}

TcpLink::~TcpLink() {
  close("the link to " + peer_name_ + " was destroyed");
  {
    std::lock_guard lock(writer_mutex_);
    stop_writer_ = true;
  }
  writer_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  ::close(fd_);
}

Channel& TcpLink::outbound() noexcept { return *outbound_; }
Channel& TcpLink::inbound() noexcept { return *inbound_; }

void TcpLink::close(const std::string& reason) {
  {
    std::lock_guard lock(close_mutex_);
    if (!closed_.load(std::memory_order_relaxed)) {
      reason_ = reason;
      closed_.store(true, std::memory_order_release);
      ::shutdown(fd_, SHUT_RDWR);  // wakes a send or recv waiting in poll
    }
  }
  // The writer checks closed() before every write and waits in slices of 100 ms, and writes on a
  // shut-down socket fail at once, so this wait is short.
  std::unique_lock writer(writer_mutex_);
  writer_cv_.wait(writer, [&] { return !writing_; });
}

void TcpLink::fail(const std::string& why) {
  close_with_error(why);
  throw_closed();
}

void TcpLink::close_with_error(const std::string& why) {
  bool first = false;
  {
    std::lock_guard lock(close_mutex_);
    if (!closed_.load(std::memory_order_relaxed)) {
      reason_ = "connection to " + peer_name_ + " closed: " + why;
      closed_.store(true, std::memory_order_release);
      ::shutdown(fd_, SHUT_RDWR);
      first = true;
    }
  }
  if (first) log_(reason_);
}

void TcpLink::throw_closed() const {
  std::lock_guard lock(close_mutex_);
  throw ChannelClosed(reason_);
}

bool TcpLink::finish_writing(Deadline deadline) {
  {
    std::unique_lock writer(writer_mutex_);
    if (!writer_cv_.wait_until(writer, deadline, [&] { return !writing_ || closed(); }))
      return false;
  }
  if (closed()) throw_closed();
  return true;
}

void TcpLink::send(Frame& frame, Deadline start_by, Deadline deadline) {
  std::lock_guard lock(send_mutex_);
  if (closed()) throw_closed();
  // The chunked payloads' events and the borrowed marks belong to this frame only, however the
  // send ends — but for a ChannelTimeout before anything left, after which the same frame may be
  // sent again.
  struct ClearFrameMarks {
    Frame& frame;
    bool keep = false;
    ~ClearFrameMarks() {
      if (keep) return;
      frame.chunked.clear();
      frame.borrowed.clear();
    }
  } clear_marks{frame};
  check_frame_limits(frame, limits_);
  try {
    wait_payloads_ready(frame, start_by, true);
    if (!finish_writing(start_by))
      throw ChannelTimeout(peer_name_ + " has not taken the previous frame before the deadline");
    lay_out(frame, encoder_.encode(frame, next_seq_));
    if (!gates_.empty()) wait_chunk(gates_.front(), start_by, false);
  } catch (const ChannelTimeout&) {
    clear_marks.keep = true;
    throw;
  }
  std::size_t first = 0;  // unsent_[first] is the next span with bytes left
  bool handed = false;
  while (first < unsent_.size()) {
    std::exception_ptr failed;
    const std::size_t end = writable_end(failed);
    if (failed || end == first) {
      wait_chunk(gates_[open_gates_], deadline, true);
      continue;
    }
    const ssize_t n = write_some(first, end);
    if (n > 0 || (n < 0 && errno == EINTR)) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (closed()) throw_closed();
      hand_to_writer(frame, first);  // the peer's buffers are full
      handed = true;
      break;
    }
    if (closed()) throw_closed();
    fail(std::string("sending failed: ") + std::strerror(errno));
  }
  // The writer sends the chunks still being copied as they arrive; this send fails unless they
  // all do (waiting for the device's copies, never for the peer). gates_ stays as it is while
  // the writer holds the frame; only open_gates_ is the writer's.
  if (handed)
    for (const Gate& gate : gates_) wait_chunk(gate, deadline, true);
  ++next_seq_;
  frame.tensors.clear();
}

void TcpLink::lay_out(const Frame& frame, std::span<const iovec> spans) {
  gates_.clear();
  open_gates_ = 0;
  if (frame.chunked.empty()) {
    unsent_.assign(spans.begin(), spans.end());
    return;
  }
  // The encoder's spans: header and descriptors, the metadata when there is any, then each
  // non-empty tensor's bytes in order.
  std::size_t next = frame.metadata.empty() ? 1 : 2;
  unsent_.assign(spans.begin(), spans.begin() + static_cast<std::ptrdiff_t>(next));
  for (std::size_t i = 0; i < frame.tensors.size(); ++i) {
    const std::size_t nbytes = frame.tensors[i].nbytes();
    if (nbytes == 0) continue;
    const iovec span = spans[next++];
    auto chunked = std::find_if(frame.chunked.begin(), frame.chunked.end(),
                                [&](const ChunkedPayload& c) { return c.is(frame.tensors[i]); });
    if (chunked == frame.chunked.end()) {
      unsent_.push_back(span);
      continue;
    }
    const std::size_t chunk = chunked->chunk_bytes;
    if (chunk == 0 || chunked->ready.size() != (nbytes + chunk - 1) / chunk)
      throw Error(Errc::invalid_argument,
                  "sending to " + peer_name_ + ": tensor " + std::to_string(i) + " of " +
                      std::to_string(nbytes) + " bytes is chunked as " +
                      std::to_string(chunked->ready.size()) + " chunks of " +
                      std::to_string(chunk) + " bytes");
    auto* bytes = static_cast<std::uint8_t*>(span.iov_base);
    for (std::size_t k = 0; k < chunked->ready.size(); ++k) {
      const std::size_t begin = k * chunk;
      const std::size_t end = std::min(begin + chunk, nbytes);
      gates_.push_back(Gate{unsent_.size(), chunked->ready[k], i, begin, end});
      unsent_.push_back(iovec{bytes + begin, end - begin});
    }
  }
}

std::size_t TcpLink::writable_end(std::exception_ptr& failed) {
  while (open_gates_ < gates_.size() && gates_[open_gates_].ready->query()) {
    if ((failed = gates_[open_gates_].ready->error())) return gates_[open_gates_].span;
    ++open_gates_;
  }
  return open_gates_ < gates_.size() ? gates_[open_gates_].span : unsent_.size();
}

std::string TcpLink::describe(const Gate& gate) {
  return "tensor " + std::to_string(gate.tensor) + "'s bytes [" + std::to_string(gate.begin) +
         ", " + std::to_string(gate.end) + ")";
}

void TcpLink::wait_chunk(const Gate& gate, Deadline deadline, bool sent_any) {
  const Event& ready = *gate.ready;
  const bool in_time =
      ready.query() || ready.wait_for(std::max(Clock::duration::zero(), deadline - Clock::now()));
  const std::exception_ptr error = in_time ? ready.error() : nullptr;
  if (in_time && !error) return;
  const std::string why =
      describe(gate) + (error ? " did not reach host memory: " + message_of(error)
                              : " did not reach host memory before the deadline (its " +
                                    ready.describe() + " did not complete)");
  const Errc code = error ? code_of(error) : Errc::timeout;
  if (!sent_any) {  // nothing of the frame has left: the link stays as it was
    // Late (not failed): a ChannelTimeout, as for a full channel, so a sender waiting in
    // slices tries again until its own deadline.
    if (!error) throw ChannelTimeout("sending to " + peer_name_ + ": " + why);
    throw Error(code, "sending to " + peer_name_ + ": " + why);
  }
  close_with_error("a frame was cut short, since " + why);
  throw Error(code, "sending to " + peer_name_ + ": " + why +
                        "; part of the frame had left, so the link is closed");
}

void TcpLink::hand_to_writer(Frame& frame, std::size_t first) {
  if (!writer_.joinable()) {
    try {
      writer_ = start_thread_([this] { writer_loop(); });
    } catch (const std::exception& error) {
      // Part of the frame is on the wire and nobody would write the rest: the stream is over.
      fail(std::string("cannot start the thread that finishes frames the peer does not take "
                       "at once: ") +
           error.what());
    }
  }
  try {
    copy_unsent_borrowed(frame, first);
  } catch (const std::exception& error) {
    // As above: the rest of the frame cannot go without its bytes.
    fail(std::string("cannot copy what the peer has not taken of a payload: ") + error.what());
  }
  std::lock_guard writer(writer_mutex_);
  writing_first_ = first;
  // The caller may reuse its frame as soon as send returns. A vector swap keeps each buffer
  // where it is, so unsent_ now points into writing_metadata_; the frame gets the spent one.
  writing_tensors_ = std::move(frame.tensors);
  writing_metadata_.swap(frame.metadata);
  frame.metadata.clear();
  writing_ = true;
  writer_cv_.notify_all();
}

void TcpLink::copy_unsent_borrowed(Frame& frame, std::size_t first) {
  frame.for_each_borrowed([&](std::size_t index) {
    Tensor& source = frame.tensors[index];
    const auto begin = reinterpret_cast<std::uintptr_t>(source.data());
    const std::size_t nbytes = source.nbytes();
    // Where in `source` a span's next byte is; nbytes for a span of other memory.
    auto offset_of = [&](const iovec& span) {
      const auto at = reinterpret_cast<std::uintptr_t>(span.iov_base);
      return span.iov_len > 0 && at >= begin && at - begin < nbytes ? at - begin : nbytes;
    };
    // From the lowest unsent byte: a tensor given twice has spans of both in this memory.
    std::size_t lowest = nbytes;
    for (std::size_t s = first; s < unsent_.size(); ++s)
      lowest = std::min(lowest, offset_of(unsent_[s]));
    if (lowest == nbytes) return;  // all on the wire already
    Tensor copy = copy_allocator_(source.shape(), source.dtype());
    auto* const to = static_cast<std::uint8_t*>(copy.data());
    std::memcpy(to + lowest, static_cast<const std::uint8_t*>(source.data()) + lowest,
                nbytes - lowest);
    for (std::size_t s = first; s < unsent_.size(); ++s)
      if (const std::size_t at = offset_of(unsent_[s]); at < nbytes) unsent_[s].iov_base = to + at;
    source = std::move(copy);
  });
}

ssize_t TcpLink::write_some(std::size_t& first, std::size_t end) {
  msghdr message{};
  message.msg_iov = unsent_.data() + first;
  message.msg_iovlen = std::min<std::size_t>(end - first, IOV_MAX);
  const ssize_t n = ::sendmsg(fd_, &message, MSG_NOSIGNAL);
  auto left = static_cast<std::size_t>(std::max<ssize_t>(n, 0));
  while (left > 0 && left >= unsent_[first].iov_len) left -= unsent_[first++].iov_len;
  if (left > 0) {
    unsent_[first].iov_base = static_cast<std::uint8_t*>(unsent_[first].iov_base) + left;
    unsent_[first].iov_len -= left;
  }
  return n;
}

std::string TcpLink::write_rest(std::size_t first) {
  while (first < unsent_.size()) {
    if (closed()) return "";
    std::exception_ptr failed;
    const std::size_t end = writable_end(failed);
    // A chunk whose copy failed or is late fails the send() still waiting for it, which closes
    // the link; the writer only stops.
    if (failed) return "";
    if (end == first) {
      // Short slices, so that a close is noticed promptly.
      gates_[open_gates_].ready->wait_for(std::chrono::milliseconds(100));
      continue;
    }
    const ssize_t n = write_some(first, end);
    if (n > 0 || (n < 0 && errno == EINTR)) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Short slices, so that a close is noticed promptly.
      net::wait_until(fd_, POLLOUT, deadline_after(std::chrono::milliseconds(100)));
      continue;
    }
    return std::string("sending failed: ") + std::strerror(errno);
  }
  return "";
}

void TcpLink::writer_loop() {
  std::unique_lock lock(writer_mutex_);
  while (true) {
    writer_cv_.wait(lock, [&] { return writing_ || stop_writer_; });
    if (stop_writer_) return;
    const std::size_t first = writing_first_;
    lock.unlock();
    const std::string error = write_rest(first);
    if (!error.empty()) close_with_error(error);
    lock.lock();
    writing_tensors_.clear();
    writing_ = false;
    writer_cv_.notify_all();
  }
}

bool TcpLink::recv(Frame& frame, Deadline deadline) {
  std::lock_guard lock(recv_mutex_);
  if (closed()) throw_closed();
  try {
    while (!decoder_.ready()) {
      if (staged_begin_ < staged_end_) {
        staged_begin_ += decoder_.feed({staging_.get() + staged_begin_, staged_end_ - staged_begin_});
        continue;
      }
      // Read the rest of the current part in place, and whatever follows into the staging buffer.
      const std::span<std::uint8_t> part = decoder_.next_buffer();
      iovec into[2] = {{part.data(), part.size()}, {staging_.get(), kStagingBytes}};
      const ssize_t n = ::readv(fd_, into, 2);
      if (n > 0) {
        const std::size_t in_part = std::min(static_cast<std::size_t>(n), part.size());
        staged_begin_ = 0;
        staged_end_ = static_cast<std::size_t>(n) - in_part;
        decoder_.commit(in_part);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (closed()) throw_closed();
      if (n == 0)
        fail(decoder_.mid_frame() ? "the peer closed the connection in the middle of a frame"
                                  : "the peer closed the connection");
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        // The answer is often microseconds away: poll without sleeping for a bounded time (as
        // MPI does) before sleeping in poll(), whose wake-up costs ~20 us.
        auto readable = [this] {
          pollfd entry{fd_, POLLIN, 0};
          return ::poll(&entry, 1, 0) != 0;
        };
        if (!spin_until(readable, deadline, socket_spin_budget()) &&
            !net::wait_until(fd_, POLLIN, deadline))
          return false;
        continue;
      }
      fail(std::string("receiving failed: ") + std::strerror(errno));
    }
  } catch (const ChannelClosed&) {
    throw;
  } catch (const std::exception& error) {
    fail(error.what());
  }
  decoder_.take(frame);
  return true;
}

LogFn log_or_stderr(LogFn log) {
  if (log) return log;
  return [](const std::string& line) { std::cerr << "rankmesh: " + line + "\n" << std::flush; };
}

}  // namespace rankmesh
