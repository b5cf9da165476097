// ShmChannel's receiving side: frames out of the ring, lent payloads pulled from the sender.
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "frame_codec.hpp"
#include "parker.hpp"
#include "received_payloads.hpp"
#include "rankmesh/error.hpp"
#include "shm/shm_channel.hpp"
#include "shm/shm_channel_layout.hpp"

namespace rankmesh {
namespace {

constexpr std::size_t kPullChunk = std::size_t{8} << 20;  // one process_vm_readv at most

using shm::at;
using shm::kCmaWorks;

std::string hex(std::uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

}  // namespace

// Copies the next `n - done` bytes of the record into `dst + done`, waiting for the sender as
// needed; false at the deadline (progress is kept in `done`).
bool ShmChannel::fill(std::uint8_t* dst, std::size_t n, std::size_t& done, Deadline deadline) {
  const std::size_t chunk = shm::stream_chunk(ring_bytes_);
  const std::uint64_t end = incoming_->end;
  while (done < n) {
    if (seen_tail_ == head_) refresh_tail();
    if (seen_tail_ == head_) {
      publish_head();  // head_ < end here: lent payloads of this record stay lent
      auto more = [&] { return raw_tail() != head_ || closed(); };
      if (!wait(more, &control_->data_epoch, &control_->data_sleepers, deadline)) return false;
      refresh_tail();
      if (seen_tail_ == head_) throw_closed();
      continue;
    }
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(seen_tail_ - head_, n - done));
    read_ring(head_, dst + done, k);
    head_ += k;
    done += k;
    // Never publish the record's end before its lent payloads are read: that would let the
    // sender free them.
    if (head_ - published_head_ >= chunk && head_ < end) publish_head();
  }
  return true;
}

void ShmChannel::pull(void* dst, std::uint64_t address, std::size_t length) {
  if (at(control_->cma_state).load(std::memory_order_acquire) != kCmaWorks)
    fail("a payload came by reference although cross-process reads were never established");
  auto* out = static_cast<std::uint8_t*>(dst);
  std::size_t done = 0;
  while (done < length) {
    if (at(control_->withdrawn).load(std::memory_order_seq_cst) != 0) throw_closed();
    const std::size_t k = std::min(kPullChunk, length - done);
    iovec local{out + done, k};
    iovec remote{reinterpret_cast<void*>(static_cast<std::uintptr_t>(address + done)), k};
    const ssize_t got = process_vm_readv(peer_pid_, &local, 1, &remote, 1, 0);
    if (got > 0) {
      done += static_cast<std::size_t>(got);
      continue;
    }
    const int error = got < 0 ? errno : EFAULT;
    if (error == EINTR) continue;
    if (error == ESRCH || !peer_alive()) peer_died();
    // A sender being killed loses its memory a moment before its pidfd says so.
    if (peer_.exits_within(std::chrono::milliseconds(100))) peer_died();
    if (at(control_->withdrawn).load(std::memory_order_seq_cst) != 0) throw_closed();
    if (error == EFAULT)
      fail("its payload at 0x" + hex(address) + " (" + std::to_string(length) +
           " bytes) is not readable");
    fail(std::string("reading its memory failed: ") + std::strerror(error));
  }
  // What we read is only good if the sender had not withdrawn it by the time we finished, and
  // if the pid still names the sender (it cannot be reused while the sender lives).
  if (at(control_->withdrawn).load(std::memory_order_seq_cst) != 0) throw_closed();
  if (!peer_alive()) peer_died();
}

// Reads the lent payload at `address` into `dst` as the sender makes it readable (lent_ready:
// a borrowed payload is still being copied there); false at the deadline (progress is kept in
// the frame's `pulled`).
bool ShmChannel::pull_lent(void* dst, std::uint64_t address, std::size_t length,
                           Deadline deadline) {
  Incoming& in = *incoming_;
  auto* out = static_cast<std::uint8_t*>(dst);
  while (in.pulled < length) {
    const std::uint64_t before = lent_taken_ + in.pulled;  // lent bytes before the next one
    auto readable = [&] { return raw_lent_ready() > before || closed(); };
    if (!readable() && !wait(readable, &control_->data_epoch, &control_->data_sleepers, deadline))
      return false;
    const std::uint64_t ready = raw_lent_ready();
    if (ready <= before) throw_closed();
    const std::size_t k =
        static_cast<std::size_t>(std::min<std::uint64_t>(ready - before, length - in.pulled));
    pull(out + in.pulled, address + in.pulled, k);
    in.pulled += k;
  }
  lent_taken_ += length;
  in.pulled = 0;
  return true;
}

bool ShmChannel::start_frame(Deadline deadline) {
  auto have = [&](std::uint64_t n) {
    return [this, n] { return raw_tail() - head_ >= n || closed(); };
  };
  if (!wait(have(kFrameHeaderBytes), &control_->data_epoch, &control_->data_sleepers, deadline))
    return false;
  refresh_tail();
  if (seen_tail_ - head_ < kFrameHeaderBytes) throw_closed();

  std::uint8_t bytes[kFrameHeaderBytes];
  read_ring(head_, bytes, sizeof bytes);
  WireHeader header;
  if (WireError error = parse_frame_header(bytes, expected_seq_, options_.limits, header))
    fail("frame " + std::to_string(expected_seq_) + ": " + error.what + " at byte " +
         std::to_string(head_) + " of the ring");
  // The sender writes a frame's header, descriptors and metadata in one piece.
  const std::uint64_t prefix = header.prefix_bytes();
  if (prefix > ring_bytes_)
    fail("frame " + std::to_string(header.link_seq) + " claims a header of " +
         std::to_string(prefix) + " bytes, beyond the ring of " + std::to_string(ring_bytes_));

  if (!wait(have(prefix), &control_->data_epoch, &control_->data_sleepers, deadline))
    return false;
  refresh_tail();
  if (seen_tail_ - head_ < prefix) throw_closed();

  Incoming& in = *incoming_;
  std::vector<TensorDescriptor>& described = in.described;
  described.resize(header.tensors);  // parse_descriptor sets every field
  std::uint64_t payload = 0;
  std::uint64_t body = 0;
  for (std::size_t i = 0; i < described.size(); ++i) {
    std::uint8_t descriptor[kDescriptorBytes];
    read_ring(head_ + kFrameHeaderBytes + i * kDescriptorBytes, descriptor, sizeof descriptor);
    if (WireError error = parse_descriptor(descriptor, i, described[i]))
      fail("frame " + std::to_string(header.link_seq) + " " + error.what);
    if (described[i].nbytes > header.payload_bytes - payload)
      fail("frame " + std::to_string(header.link_seq) + ": its tensors need more than the header's "
           "payload length of " + std::to_string(header.payload_bytes) + " bytes");
    payload += described[i].nbytes;
    body += described[i].lent ? kLentPayloadBytes : described[i].nbytes;
  }
  if (payload != header.payload_bytes)
    fail("frame " + std::to_string(header.link_seq) + ": the header's payload length is " +
         std::to_string(header.payload_bytes) + " bytes but its tensors need " + std::to_string(payload));

  const FrameHeader& frame_header = header.frame;
  // Memory for every payload first: if the allocator throws, nothing has been consumed.
  in.frame.tensors.clear();
  try {
    in.landed.start(allocate_received_payloads(frame_header, described, landing_,
                                               options_.allocator, in.frame.tensors));
  } catch (const Error& error) {
    in.frame.tensors.clear();
    throw Error(error.code(), "shm channel from " + who() + ": " + error.what());
  } catch (...) {
    in.frame.tensors.clear();
    throw;
  }
  in.frame.metadata.resize(header.metadata_bytes);
  if (header.metadata_bytes > 0)
    read_ring(head_ + kFrameHeaderBytes + std::uint64_t{header.tensors} * kDescriptorBytes,
              in.frame.metadata.data(), header.metadata_bytes);
  in.frame.header = frame_header;
  head_ += prefix;
  in.end = head_ + body;
  in.tensor = 0;
  in.done = 0;
  in.active = true;
  return true;
}

void ShmChannel::land(const Landing* landing) noexcept {
  if (incoming_) {
    Incoming& in = *incoming_;
    in.landed.land(landing, in.active, in.tensor, in.frame.header, in.described, in.frame.tensors);
  }
  landing_ = landing;
}

bool ShmChannel::recv(Frame& frame, Deadline deadline) {
  if (!receiver_)
    throw Error(Errc::invalid_argument, "recv on the sending end of shm channel " + name_);
  if (broken_) throw_closed();  // what is left in the ring cannot be trusted
  shm::note_cpu(control_->receiver_cpu);
  // The peer's liveness is checked only when there is nothing to read: what a sender wrote
  // before it went away is still delivered.
  Incoming& in = *incoming_;
  if (!in.active && !start_frame(deadline)) return false;
  // A frame means an attached sender, whose pid is whom lent payloads are pulled from; the wait
  // for it may have seen the frame before its check of the peer did (a lazily made channel has
  // no handshake on this side).
  if (peer_pid_ == 0) on_attached();
  if (in.landed.withdrawn())
    in.landed.divert(in.described, options_.allocator, in.frame.tensors, in.tensor,
                     in.described[in.tensor].lent ? in.pulled : in.done);
  while (in.tensor < in.frame.tensors.size()) {
    Tensor& tensor = in.frame.tensors[in.tensor];
    const std::size_t nbytes = tensor.nbytes();
    if (in.described[in.tensor].lent) {
      if (!fill(in.reference, sizeof in.reference, in.done, deadline)) return false;
      const auto [address, length] = read_lent_payload(in.reference);
      if (length != nbytes)
        fail("frame " + std::to_string(expected_seq_) + " lends " + std::to_string(length) +
             " bytes for tensor " + std::to_string(in.tensor) + " of " + std::to_string(nbytes));
      if (!pull_lent(tensor.data(), address, nbytes, deadline)) return false;
    } else if (!fill(static_cast<std::uint8_t*>(tensor.data()), nbytes, in.done, deadline)) {
      return false;
    }
    in.done = 0;
    ++in.tensor;
  }
  if (head_ != in.end) fail("frame " + std::to_string(expected_seq_) + " ends out of place");
  publish_head();
  ++expected_seq_;
  in.active = false;
  frame.header = in.frame.header;
  frame.metadata.swap(in.frame.metadata);
  frame.tensors.swap(in.frame.tensors);
  in.frame.tensors.clear();
  return true;
}

}  // namespace rankmesh
