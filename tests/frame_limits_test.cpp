// One limit on what a frame may bring, the same for every transport (FrameLimits): a receiver
// refuses a frame that announces more, naming the limit, before it allocates anything for it.
#include <doctest/doctest.h>

#include <sys/mman.h>
#include <sys/socket.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "frame.hpp"
#include "rankmesh/runtime.hpp"
#include "shm/shm_channel.hpp"
#include "tcp/tcp_listener.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

namespace {

const std::uint64_t kLimit = FrameLimits{}.max_payload_bytes;

// A frame whose one tensor is a byte beyond the default limit: address space only, never
// touched, so it costs no memory.
Frame frame_beyond_the_limit() {
  const std::size_t bytes = kLimit + 1;
  void* data = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  REQUIRE(data != MAP_FAILED);
  Frame frame;
  frame.header = FrameHeader{1, 2, 0, 0};
  frame.tensors = {Tensor::wrap(data, {static_cast<std::int64_t>(bytes)}, DType::u8, Device{},
                                [bytes](void* p) { ::munmap(p, bytes); })};
  return frame;
}

// Counts the receiver's allocations, and refuses them: none should be asked for.
struct CountingAllocator {
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  Allocator fn() const {
    return [calls = calls](const Shape& shape, DType) -> Tensor {
      ++*calls;
      throw Error(Errc::limit_exceeded, "the test allocator was asked for " + to_string(shape));
    };
  }
};

const std::string kNamesTheLimit = std::to_string(kLimit);

}  // namespace

TEST_CASE("frame limits: the default payload limit is 4 GiB, for every transport") {
  CHECK(kLimit == std::uint64_t{4} << 30);
  CHECK(TcpOptions{}.limits.max_payload_bytes == kLimit);
  CHECK(ShmOptions{}.limits.max_payload_bytes == kLimit);
}

TEST_CASE("frame limits: a tcp receiver refuses a frame announcing more, before allocating") {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  TcpOptions sending;
  sending.limits.max_payload_bytes = 2 * kLimit;  // a sender that allows itself more
  sending.log = [](const std::string&) {};
  CountingAllocator allocator;
  TcpOptions receiving;
  receiving.allocator = allocator.fn();
  receiving.log = [](const std::string&) {};
  TcpLink sender(fds[0], PeerIdentity{0, 2}, sending);
  TcpLink receiver(fds[1], PeerIdentity{1, 2}, receiving);

  Frame frame = frame_beyond_the_limit();
  sender.outbound().send(frame, deadline_after(scaled_timeout(10s)));
  std::string refusal;
  Frame got;
  try {
    receiver.inbound().recv(got, deadline_after(scaled_timeout(10s)));
  } catch (const std::exception& error) {
    refusal = error.what();
  }
  CAPTURE(refusal);
  CHECK(refusal.find("exceeds the limit of " + kNamesTheLimit) != std::string::npos);
  CHECK(allocator.calls->load() == 0);
}

TEST_CASE("frame limits: an shm receiver refuses a frame announcing more, before allocating") {
  CountingAllocator allocator;
  ShmOptions receiving;
  receiving.allocator = allocator.fn();
  receiving.log = [](const std::string&) {};
  ShmChannel::Created created = ShmChannel::create(receiving);
  ShmOptions sending;
  sending.limits.max_payload_bytes = 2 * kLimit;
  sending.log = [](const std::string&) {};
  std::unique_ptr<ShmChannel> sender = ShmChannel::open(created.name, sending);

  // The payload may go through the ring, where the sender waits for room until the receiver
  // refuses the frame and closes the channel.
  std::thread sending_thread([&] {
    Frame frame = frame_beyond_the_limit();
    try {
      sender->send(frame, deadline_after(scaled_timeout(10s)));
    } catch (const std::exception&) {
      // Refused, as it should be: the receiver's side says how.
    }
  });
  std::string refusal;
  Frame got;
  try {
    created.channel->recv(got, deadline_after(scaled_timeout(10s)));
  } catch (const std::exception& error) {
    refusal = error.what();
  }
  sender->close("the test is over");  // whatever happened, the sender stops waiting for room
  sending_thread.join();
  CAPTURE(refusal);
  CHECK(refusal.find("exceeds the limit of " + kNamesTheLimit) != std::string::npos);
  CHECK(allocator.calls->load() == 0);
}
