// The tcp transport over loopback: what only it does — partial frames kept across deadlines, the
// writer thread, authentication, and hostile or broken peers that lose their own connection
// while the listener keeps serving. What every channel promises: channel_conformance_test.cpp.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "auth.hpp"
#include "frame_codec.hpp"
#include "rankmesh/runtime.hpp"
#include "tcp/socket_io.hpp"
#include "tcp/tcp_listener.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

namespace {

const std::string kSecret = "correct horse battery staple";

// The deadline of a wait that should end well before it: `base` times RANKMESH_TIMEOUT_SCALE.
Deadline within(std::chrono::milliseconds base) { return deadline_after(scaled_timeout(base)); }

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Collects log lines from any thread; tests wait for the line they expect.
class LogSink {
public:
  LogFn fn() {
    return [this](const std::string& line) {
      {
        std::lock_guard lock(mutex_);
        lines_.push_back(line);
      }
      changed_.notify_all();
    };
  }
  bool wait_for(const std::string& part, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_until(lock, within(timeout), [&] {
      for (const std::string& line : lines_)
        if (contains(line, part)) return true;
      return false;
    });
  }
  std::string all() {
    std::lock_guard lock(mutex_);
    std::string out;
    for (const std::string& line : lines_) out += line + "\n";
    return out;
  }

private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
};

// Rank 0 of a world of two, listening on an ephemeral loopback port.
class Server {
public:
  explicit Server(std::chrono::nanoseconds handshake_timeout = 5s, FrameLimits limits = {},
                  std::size_t max_handshakes = TcpListenerOptions{}.max_handshakes,
                  int listening_fd = -1) {
    TcpListenerOptions options;
    options.listening_fd = listening_fd;
    options.secret = kSecret;
    options.self = PeerIdentity{0, 2};
    options.handshake_timeout = handshake_timeout;
    options.max_handshakes = max_handshakes;
    options.link.limits = limits;
    options.link.log = log.fn();
    listener = std::make_unique<TcpListener>(options, [this](std::shared_ptr<TcpLink> link) {
      {
        std::lock_guard lock(mutex_);
        links_.push_back(std::move(link));
      }
      arrived_.notify_all();
    });
  }

  std::shared_ptr<TcpLink> next_link(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    REQUIRE(arrived_.wait_until(lock, within(timeout), [&] { return !links_.empty(); }));
    auto link = links_.front();
    links_.pop_front();
    return link;
  }
  bool no_link_arrived() {
    std::lock_guard lock(mutex_);
    return links_.empty();
  }

  LogSink log;

private:
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::deque<std::shared_ptr<TcpLink>> links_;

public:
  std::unique_ptr<TcpListener> listener;
};

std::shared_ptr<TcpLink> connect_to(Server& server, LogSink* log = nullptr,
                                    std::string secret = kSecret, PeerIdentity self = {1, 2}) {
  TcpOptions options;
  if (log) options.log = log->fn();
  return tcp_connect("127.0.0.1", server.listener->port(), secret, self,
                     within(5s), options);
}

// True once thread `tid` of this process sleeps in ppoll(), where the transport's blocking
// waits park; false at the deadline.
bool parked_in_ppoll(pid_t tid, Deadline deadline) {
  const std::string path = "/proc/self/task/" + std::to_string(tid) + "/syscall";
  while (Clock::now() < deadline) {
    std::ifstream in(path);
    long number = -1;
    if (in >> number && number == SYS_ppoll) return true;
    std::this_thread::yield();
  }
  return false;
}

// A plain socket to the server, for clients that misbehave.
int raw_connect(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  return fd;
}

std::string local_address(int fd) {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  return "127.0.0.1:" + std::to_string(ntohs(address.sin_port));
}

// True when the server closes the raw client's connection within the timeout.
bool closed_by_server(int fd, std::chrono::milliseconds timeout = 5s) {
  const Deadline deadline = within(timeout);
  char sink[4096];
  while (net::wait_until(fd, POLLIN, deadline)) {
    const ssize_t n = ::recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
  }
  return false;
}

void send_raw(int fd, const std::vector<std::uint8_t>& bytes) {
  net::write_all(fd, bytes.data(), bytes.size(), within(5s), "test client");
}

std::vector<std::uint8_t> frame_bytes(const Frame& frame, std::uint64_t link_seq) {
  FrameEncoder encoder;
  std::vector<std::uint8_t> out;
  for (const iovec& span : encoder.encode(frame, link_seq)) {
    const auto* p = static_cast<const std::uint8_t*>(span.iov_base);
    out.insert(out.end(), p, p + span.iov_len);
  }
  return out;
}

Tensor patterned(std::size_t bytes, std::uint64_t seed) {
  Tensor t = Tensor::empty({static_cast<std::int64_t>(bytes / 8)}, DType::i64);
  auto* words = t.data_as<std::uint64_t>();
  std::uint64_t x = seed;
  for (std::size_t i = 0; i < bytes / 8; ++i) {
    x += 0x9e3779b97f4a7c15ull;  // splitmix64
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    words[i] = z ^ (z >> 31);
  }
  return t;
}

Frame small_frame(std::uint64_t seq, std::uint8_t fill = 7) {
  Frame f;
  f.header = FrameHeader{3, 1, seq, 1};
  f.metadata.assign(static_cast<std::size_t>(seq % 17), fill);
  f.tensors.push_back(patterned(64, seq));
  return f;
}

}  // namespace

TEST_CASE("tcp: the listener binds loopback on an ephemeral port by default") {
  Server server;
  CHECK(server.listener->port() != 0);
  CHECK(server.listener->address() == "127.0.0.1:" + std::to_string(server.listener->port()));
}

namespace {

// A TCP socket bound to an ephemeral loopback port; listening if asked. Returns it and its port.
std::pair<int, std::uint16_t> loopback_socket(bool listening) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  if (listening) REQUIRE(::listen(fd, 16) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  return {fd, ntohs(address.sin_port)};
}

// The Error(invalid_config) a listener handed `fd` for `port` throws.
std::string refusal(int fd, std::uint16_t port) {
  TcpListenerOptions options;
  options.secret = kSecret;
  options.port = port;
  options.listening_fd = fd;
  try {
    TcpListener listener(options, [](std::shared_ptr<TcpLink>) {});
  } catch (const Error& error) {
    CHECK(error.code() == Errc::invalid_config);
    return error.what();
  }
  FAIL("the listener took descriptor " << fd);
  return "";
}

}  // namespace

TEST_CASE("tcp: a listener serves a socket handed over already listening (rankmesh launch's registry port)") {
  auto [fd, port] = loopback_socket(true);
  Server server(5s, {}, TcpListenerOptions{}.max_handshakes, fd);
  CHECK(server.listener->port() == port);
  CHECK(server.listener->address() == "127.0.0.1:" + std::to_string(port));
  auto client = connect_to(server);
  auto accepted = server.next_link();
  CHECK(accepted->peer() == PeerIdentity{1, 2});
}

TEST_CASE("tcp: a handed-over descriptor that is not a listening socket of the port is refused, named") {
  auto [bound, port] = loopback_socket(false);
  CHECK(contains(refusal(bound, port), "is not a listening stream socket"));
  ::close(bound);
  auto [listening, listening_port] = loopback_socket(true);
  CHECK(contains(refusal(listening, static_cast<std::uint16_t>(listening_port == 1 ? 2 : 1)),
                 "is bound to 127.0.0.1:" + std::to_string(listening_port) + ", not port"));
  ::close(listening);
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  CHECK(contains(refusal(pipe_fds[0], 0), "is not a socket"));
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

TEST_CASE("tcp: each end of a link knows its authenticated peer") {
  Server server;
  auto client = connect_to(server);
  auto accepted = server.next_link();
  CHECK(client->peer() == PeerIdentity{0, 2});
  CHECK(accepted->peer() == PeerIdentity{1, 2});
  CHECK(contains(accepted->peer_name(), "rank 1 (127.0.0.1:"));
}

TEST_CASE("tcp: recv returns false at its deadline and keeps a partial frame for the next call") {
  Server server;
  const int fd = raw_connect(server.listener->port());
  authenticate(fd, AuthRole::client, kSecret, PeerIdentity{1, 2}, within(5s));
  auto accepted = server.next_link();
  Frame got;
  CHECK_FALSE(accepted->inbound().recv(got, deadline_after(20ms)));

  const Frame sent = small_frame(5);
  const auto bytes = frame_bytes(sent, 0);
  const std::size_t half = bytes.size() / 2;
  send_raw(fd, {bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(half)});
  const auto before = Clock::now();
  CHECK_FALSE(accepted->inbound().recv(got, deadline_after(50ms)));
  CHECK(Clock::now() - before >= 50ms);
  send_raw(fd, {bytes.begin() + static_cast<std::ptrdiff_t>(half), bytes.end()});
  REQUIRE(accepted->inbound().recv(got, within(5s)));
  CHECK(got.metadata == sent.metadata);
  CHECK(equal(got.tensors[0], sent.tensors[0]));
  ::close(fd);
}

TEST_CASE("tcp: a send never waits for the peer to read, the next one waits for the last") {
  Server server;
  LogSink client_log;
  auto client = connect_to(server, &client_log);
  auto accepted = server.next_link();
  Frame big;
  big.tensors = {Tensor::empty({std::int64_t{64} << 20}, DType::u8)};  // beyond socket buffers
  big.tensors[0].data_as<std::uint8_t>()[12345] = 7;
  // Nobody reads yet: the frame is handed over, and the rest is written in the background.
  client->outbound().send(big, within(1s));
  CHECK(big.tensors.empty());
  Frame small = small_frame(1);
  CHECK_THROWS_WITH_AS(client->outbound().send(small, deadline_after(100ms)),
                       doctest::Contains("has not taken the previous frame"), ChannelTimeout);
  CHECK_FALSE(client->closed());
  // Once the peer reads, both frames arrive whole and in order.
  Frame got;
  REQUIRE(accepted->inbound().recv(got, within(10s)));
  REQUIRE(got.tensors.size() == 1);
  CHECK(got.tensors[0].numel() == std::int64_t{64} << 20);
  CHECK(got.tensors[0].data_as<std::uint8_t>()[12345] == 7);
  small = small_frame(1);
  client->outbound().send(small, within(5s));
  REQUIRE(accepted->inbound().recv(got, within(5s)));
  CHECK(got.metadata == small_frame(1).metadata);
}

TEST_CASE("tcp: borrowed payloads the peer has not taken when send returns are copied first; "
          "the caller may change them at once") {
  // Nobody reads while the frame goes out: the socket takes its start, the writer thread must
  // send the rest from a copy. The same tensor twice, and a small borrowed one the socket takes
  // whole, check that a copy starts from the lowest byte still unsent and only where needed.
  Server server;
  auto client = connect_to(server);
  auto accepted = server.next_link();
  constexpr std::size_t kBytes = std::size_t{24} << 20;  // beyond socket buffers
  Tensor big = patterned(kBytes, 1);
  Tensor small = patterned(4096, 2);
  Frame f;
  f.tensors = {small, big, patterned(kBytes, 3), big};
  f.borrowed = {0, 1, 3};
  client->outbound().send(f, within(5s));
  CHECK(f.borrowed.empty());
  CHECK_FALSE(client->outbound().wait_released(Clock::now()));  // the writer holds the rest
  std::memset(big.data(), 0xee, big.nbytes());  // the caller's again
  std::memset(small.data(), 0xee, small.nbytes());
  Frame got;
  REQUIRE(accepted->inbound().recv(got, within(20s)));
  REQUIRE(got.tensors.size() == 4);
  CHECK(equal(got.tensors[0], patterned(4096, 2)));
  CHECK(equal(got.tensors[1], patterned(kBytes, 1)));
  CHECK(equal(got.tensors[2], patterned(kBytes, 3)));
  CHECK(equal(got.tensors[3], patterned(kBytes, 1)));
}

TEST_CASE("tcp: once close returns, the writer thread no longer holds a frame's payload") {
  // all_gather lends the caller's tensor to the channel and, when it fails, closes the channel
  // before the caller may overwrite the tensor: nothing may read it after close returns.
  Server server;
  LogSink client_log;
  auto client = connect_to(server, &client_log);
  auto accepted = server.next_link();
  constexpr std::size_t kBytes = std::size_t{64} << 20;  // beyond socket buffers
  auto released = std::make_shared<std::atomic<bool>>(false);
  void* memory = std::malloc(kBytes);
  REQUIRE(memory != nullptr);
  std::memset(memory, 7, kBytes);
  Frame big;
  big.tensors = {Tensor::wrap(memory, {static_cast<std::int64_t>(kBytes)}, DType::u8, Device{},
                              [released](void* p) {
                                std::free(p);
                                released->store(true);
                              })};
  // Nobody reads: the writer thread holds the rest of the frame, and with it the tensor.
  client->outbound().send(big, within(1s));
  REQUIRE(big.tensors.empty());
  CHECK_FALSE(released->load());
  client->close("the lender's all_gather failed");
  CHECK(released->load());
}

TEST_CASE("tcp: a frame the writer thread finishes owns its metadata, the caller reuses its frame") {
  // One frame object, rewritten for every send as a rank's scratch frame is, with metadata big
  // enough that the peer's buffers fill and the writer thread finishes frames after send()
  // has returned. The reader starts only once that has happened and the caller has already
  // rewritten the frame.
  Server server;
  auto client = connect_to(server);
  auto accepted = server.next_link();
  constexpr int kFrames = 300;
  constexpr std::size_t kMetadataBytes = std::size_t{256} << 10;
  auto fill_metadata = [](std::vector<std::uint8_t>& metadata, int frame) {
    metadata.resize(kMetadataBytes);
    for (std::size_t i = 0; i < kMetadataBytes; ++i)
      metadata[i] = static_cast<std::uint8_t>(frame * 131 + i * 7 + (i >> 12));
  };

  std::mutex mutex;
  std::condition_variable changed;
  bool reader_may_start = false;
  int handed_over = 0;  // sends that returned with the writer thread still holding the frame
  std::thread sender([&] {
    Frame frame;
    for (int i = 0; i < kFrames; ++i) {
      frame.header = FrameHeader{3, 1, static_cast<std::uint64_t>(i), 1};
      fill_metadata(frame.metadata, i);
      frame.tensors = {patterned(64, static_cast<std::uint64_t>(i))};
      {
        std::lock_guard lock(mutex);
        reader_may_start = handed_over > 0;
      }
      changed.notify_all();
      client->outbound().send(frame, within(30s));
      if (!client->outbound().wait_released(Clock::now())) {
        std::lock_guard lock(mutex);
        ++handed_over;
      }
    }
    std::lock_guard lock(mutex);
    reader_may_start = true;
    changed.notify_all();
  });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return reader_may_start; });
  }
  Frame got;
  std::vector<std::uint8_t> want;
  int corrupted = 0;
  for (int i = 0; i < kFrames; ++i) {
    REQUIRE(accepted->inbound().recv(got, within(30s)));
    REQUIRE(got.header.seq == static_cast<std::uint64_t>(i));
    fill_metadata(want, i);
    if (got.metadata != want) ++corrupted;
    REQUIRE(got.tensors.size() == 1);
    CHECK(equal(got.tensors[0], patterned(64, static_cast<std::uint64_t>(i))));
  }
  sender.join();
  CHECK(corrupted == 0);
  std::lock_guard lock(mutex);
  CHECK(handed_over > 0);
}

TEST_CASE("tcp: a writer thread that cannot be started closes the link with the reason") {
  Server server;
  LogSink client_log;
  TcpOptions options;
  options.log = client_log.fn();
  options.start_thread = [](std::function<void()>) -> std::thread {
    throw std::system_error(EAGAIN, std::generic_category(), "no thread for the test");
  };
  auto client = tcp_connect("127.0.0.1", server.listener->port(), kSecret, {1, 2},
                            within(5s), options);
  auto accepted = server.next_link();
  Frame big;
  big.tensors = {Tensor::empty({std::int64_t{64} << 20}, DType::u8)};  // beyond socket buffers
  const char* reason = "cannot start the thread that finishes frames";
  CHECK_THROWS_WITH_AS(client->outbound().send(big, within(5s)),
                       doctest::Contains(reason), ChannelClosed);
  CHECK(client->closed());
  CHECK(client_log.wait_for(reason));
  // Not stuck "writing": every later call fails at once with the same reason.
  Frame small = small_frame(1);
  CHECK_THROWS_WITH_AS(client->outbound().send(small, within(60s)),
                       doctest::Contains(reason), ChannelClosed);
  CHECK_THROWS_WITH_AS(client->outbound().wait_released(within(60s)),
                       doctest::Contains(reason), ChannelClosed);
  // The peer sees the connection end in the middle of the frame.
  Frame got;
  CHECK_THROWS_WITH_AS(accepted->inbound().recv(got, within(60s)),
                       doctest::Contains("in the middle of a frame"), ChannelClosed);
  client->outbound().close("done");
}

TEST_CASE("tcp: bad frames from the sender's side are refused locally, the link stays up") {
  Server server;
  TcpOptions options;
  options.limits.max_metadata_bytes = 8;
  auto client = tcp_connect("127.0.0.1", server.listener->port(), kSecret, {1, 2},
                            within(5s), options);
  auto accepted = server.next_link();
  Frame f;
  f.metadata.assign(9, 0);
  CHECK_THROWS_AS(client->outbound().send(f, within(1s)), Error);
  float on_device[2] = {};
  f.metadata.clear();
  f.tensors = {Tensor::wrap(on_device, {2}, DType::f32, Device{DeviceType::cuda, 0}, nullptr)};
  CHECK_THROWS_AS(client->outbound().send(f, within(1s)), Error);
  Frame ok = small_frame(0);
  client->outbound().send(ok, within(1s));
  Frame got;
  REQUIRE(accepted->inbound().recv(got, within(5s)));
  CHECK(got.header.seq == 0);
}

TEST_CASE("tcp: a peer closing its socket makes recv throw ChannelClosed naming it") {
  Server server;
  auto client = connect_to(server);
  auto accepted = server.next_link();
  Frame f = small_frame(2);
  client->outbound().send(f, within(1s));
  client.reset();
  Frame got;
  REQUIRE(accepted->inbound().recv(got, within(5s)));  // what was sent still arrives
  try {
    accepted->inbound().recv(got, within(5s));
    FAIL("recv after the peer closed");
  } catch (const ChannelClosed& closed) {
    CHECK(contains(closed.what(), "connection to rank 1 (127.0.0.1:"));
    CHECK(contains(closed.what(), "the peer closed the connection"));
  }
  CHECK(server.log.wait_for("the peer closed the connection"));
  CHECK_THROWS_AS(accepted->outbound().send(f, within(1s)), ChannelClosed);
}

TEST_CASE("tcp: close wakes a receiver blocked in recv, with the reason") {
  Server server;
  auto client = connect_to(server);
  auto accepted = server.next_link();
  const pid_t receiver = static_cast<pid_t>(::syscall(SYS_gettid));
  std::thread closer([&] {
    CHECK(parked_in_ppoll(receiver, within(5s)));
    accepted->inbound().close("the world was aborted");
  });
  // Unless close wakes it, recv returns false at its deadline.
  Frame got;
  CHECK_THROWS_WITH_AS(accepted->inbound().recv(got, within(10s)), "the world was aborted",
                       ChannelClosed);
  closer.join();
}

TEST_CASE("tcp: a wrong secret is refused and logged while a correct client still connects") {
  Server server;
  Errc code = Errc::malformed;
  try {
    connect_to(server, nullptr, "not the secret");
    FAIL("connected with a wrong secret");
  } catch (const Error& error) {
    code = error.code();
    CHECK(contains(error.what(), "refused our authentication (wrong secret?)"));
  }
  CHECK(code == Errc::mismatch);
  CHECK(server.log.wait_for("failed authentication (wrong secret?)"));
  CHECK(contains(server.log.all(), "peer 127.0.0.1:"));
  CHECK(server.no_link_arrived());

  CHECK_THROWS_AS(connect_to(server, nullptr, kSecret, PeerIdentity{1, 3}), Error);
  CHECK(server.log.wait_for("claims world size 3, this rank has 2"));

  auto client = connect_to(server);
  auto accepted = server.next_link();
  Frame f = small_frame(1);
  client->outbound().send(f, within(1s));
  Frame got;
  CHECK(accepted->inbound().recv(got, within(5s)));
}

TEST_CASE("tcp: outsiders that send garbage or nothing are dropped and logged by address") {
  Server server(300ms);
  const int garbage = raw_connect(server.listener->port());
  const int silent = raw_connect(server.listener->port());
  const std::string garbage_at = local_address(garbage);
  const std::string silent_at = local_address(silent);
  const std::string request = "GET / HTTP/1.1\r\nHost: rank0\r\nUser-Agent: scanner/1.0\r\n\r\n";
  send_raw(garbage, {request.begin(), request.end()});

  CHECK(closed_by_server(garbage));
  CHECK(server.log.wait_for("peer " + garbage_at + " is not a rankmesh rank"));
  CHECK(closed_by_server(silent));
  CHECK(server.log.wait_for("peer " + silent_at + " did not authenticate within 0.3 s"));
  ::close(garbage);
  ::close(silent);

  auto client = connect_to(server);
  server.next_link();
}

TEST_CASE("tcp: outsiders holding or flooding the listener's handshakes cannot keep a peer out") {
  // A small pool and a handshake deadline longer than the test: silent outsiders would hold
  // every slot throughout, unless a newer connection crowds the oldest out.
  constexpr std::size_t kPool = 8;
  Server server(scaled_timeout(60s), FrameLimits{}, kPool);
  const std::uint16_t port = server.listener->port();
  auto running = connect_to(server);
  auto running_accepted = server.next_link();
  auto exchange = [](TcpLink& from, TcpLink& to, std::uint64_t seq) {
    Frame f = small_frame(seq);
    from.outbound().send(f, within(5s));
    Frame got;
    REQUIRE(to.inbound().recv(got, within(5s)));
    CHECK(got.metadata == small_frame(seq).metadata);
  };

  std::vector<int> idle;
  for (int i = 0; i < 200; ++i) idle.push_back(raw_connect(port));
  // Garbage on more connections while new links form and the running one carries frames.
  std::vector<int> garbage;
  std::jthread flood([&] {
    const std::vector<std::uint8_t> junk(100, 0xee);
    for (int i = 0; i < 200; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(port);
      ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0)
        [[maybe_unused]] ssize_t sent = ::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
      garbage.push_back(fd);
    }
  });
  for (std::uint64_t i = 0; i < 10; ++i) {
    auto client = connect_to(server);
    auto accepted = server.next_link();
    exchange(*client, *accepted, i);
    exchange(*accepted, *client, i);
    exchange(*running, *running_accepted, i);
  }
  flood.join();
  CHECK(server.listener->handshakes_in_progress() <= kPool);
  CHECK(server.log.wait_for("dropped to make room for a newer connection"));
  CHECK(server.log.wait_for("is not a rankmesh rank"));
  // A peer arriving after the flood gets in too.
  auto late = connect_to(server);
  auto late_accepted = server.next_link();
  exchange(*late, *late_accepted, 11);
  for (int fd : idle) ::close(fd);
  for (int fd : garbage) ::close(fd);
}

TEST_CASE("tcp: an authenticated peer's bad magic, oversized length or sequence gap closes its link") {
  Server server(5s, FrameLimits{.max_metadata_bytes = 1 << 20});
  auto raw_peer = [&] {
    const int fd = raw_connect(server.listener->port());
    authenticate(fd, AuthRole::client, kSecret, PeerIdentity{1, 2}, within(5s));
    return std::make_pair(fd, server.next_link());
  };
  auto expect_closed = [&](int fd, TcpLink& link, const std::string& why) {
    Frame got;
    try {
      while (link.inbound().recv(got, within(5s))) {
      }
      FAIL("the link stayed open");
    } catch (const ChannelClosed& closed) {
      CAPTURE(closed.what());
      CHECK(contains(closed.what(), "connection to rank 1 (" + local_address(fd) + ") closed"));
      CHECK(contains(closed.what(), why));
    }
    CHECK(server.log.wait_for(why));
    CHECK(closed_by_server(fd));
    ::close(fd);
  };

  SUBCASE("bad magic") {
    auto [fd, link] = raw_peer();
    auto bytes = frame_bytes(small_frame(1), 0);
    bytes[0] = 'X';
    send_raw(fd, bytes);
    expect_closed(fd, *link, "bad magic");
  }
  SUBCASE("garbage after the handshake") {
    auto [fd, link] = raw_peer();
    send_raw(fd, std::vector<std::uint8_t>(100, 0xee));
    expect_closed(fd, *link, "bad magic 0xeeeeeeee");
  }
  SUBCASE("an oversized metadata length") {
    auto [fd, link] = raw_peer();
    auto bytes = frame_bytes(small_frame(1), 0);
    bytes[36] = 0;
    bytes[37] = 0;
    bytes[38] = 0;
    bytes[39] = 0x40;  // 1 GiB
    send_raw(fd, bytes);
    expect_closed(fd, *link, "metadata of 1073741824 bytes exceeds the limit of 1048576");
  }
  SUBCASE("a sequence gap, after good frames") {
    auto [fd, link] = raw_peer();
    send_raw(fd, frame_bytes(small_frame(1), 0));
    send_raw(fd, frame_bytes(small_frame(2), 1));
    send_raw(fd, frame_bytes(small_frame(3), 3));
    Frame got;
    REQUIRE(link->inbound().recv(got, within(5s)));
    REQUIRE(link->inbound().recv(got, within(5s)));
    expect_closed(fd, *link, "frame 2 on this link: out of sequence");
  }
  // The listener keeps serving.
  auto client = connect_to(server);
  auto accepted = server.next_link();
  Frame f = small_frame(4);
  client->outbound().send(f, within(1s));
  Frame got;
  CHECK(accepted->inbound().recv(got, within(5s)));
}

TEST_CASE("tcp: stop is prompt even with a handshake in progress") {
  const auto handshake_timeout = scaled_timeout(30s);
  auto server = std::make_unique<Server>(handshake_timeout);
  const int silent = raw_connect(server->listener->port());
  const Deadline started = within(5s);
  while (server->listener->handshakes_in_progress() == 0 && Clock::now() < started)
    std::this_thread::yield();
  REQUIRE(server->listener->handshakes_in_progress() == 1);
  const auto before = Clock::now();
  server->listener->stop();
  CHECK(Clock::now() - before < handshake_timeout);  // it did not wait for the handshake to end
  CHECK(closed_by_server(silent));
  ::close(silent);
}

TEST_CASE("tcp: connecting where nobody listens times out at the deadline") {
  // A port held by a socket that does not listen: refused, and no one else can take it meanwhile.
  const int holder = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  REQUIRE(::bind(holder, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  socklen_t length = sizeof(address);
  ::getsockname(holder, reinterpret_cast<sockaddr*>(&address), &length);
  const std::uint16_t port = ntohs(address.sin_port);
  const auto before = Clock::now();
  Errc code = Errc::malformed;
  try {
    tcp_connect("127.0.0.1", port, kSecret, {1, 2}, deadline_after(100ms));
  } catch (const Error& error) {
    code = error.code();
    CHECK(contains(error.what(), "could not connect to 127.0.0.1:" + std::to_string(port)));
  }
  CHECK(code == Errc::timeout);
  CHECK(Clock::now() - before >= 100ms);  // it kept trying until the deadline
  ::close(holder);
}

TEST_CASE("tcp: a handshake the listener dropped is tried again until the deadline") {
  // A listener that drops its first two connections unanswered, as a full pool does, and
  // authenticates the third.
  const int listening = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  REQUIRE(::bind(listening, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  REQUIRE(::listen(listening, 8) == 0);
  socklen_t length = sizeof(address);
  ::getsockname(listening, reinterpret_cast<sockaddr*>(&address), &length);
  int dropped = 0;
  int authenticated = -1;
  {
    std::jthread listener([&] {
      const Deadline deadline = within(5s);
      while (authenticated < 0 && net::wait_until(listening, POLLIN, deadline)) {
        const int fd = ::accept4(listening, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        if (dropped < 2) {
          ::close(fd);
          ++dropped;
          continue;
        }
        try {
          authenticate(fd, AuthRole::server, kSecret, PeerIdentity{0, 2}, deadline);
          authenticated = fd;
        } catch (const Error&) {
          ::close(fd);
          return;
        }
      }
    });
    auto link = tcp_connect("127.0.0.1", ntohs(address.sin_port), kSecret, {1, 2}, within(5s));
    CHECK(link->peer() == PeerIdentity{0, 2});
  }
  CHECK(dropped == 2);
  ::close(authenticated);
  ::close(listening);
}

TEST_CASE("tcp auth: the secret comes from RANKMESH_SECRET, else RANKMESH_SECRET_FILE") {
  // Restores what the environment held before.
  struct Saved {
    const char* name;
    std::optional<std::string> value;
    explicit Saved(const char* n) : name(n) {
      if (const char* v = std::getenv(n)) value = v;
      ::unsetenv(n);
    }
    ~Saved() {
      if (value) ::setenv(name, value->c_str(), 1);
      else ::unsetenv(name);
    }
  } saved_secret("RANKMESH_SECRET"), saved_file("RANKMESH_SECRET_FILE");
  CHECK_FALSE(load_secret().has_value());

  const std::string path = "/tmp/rankmesh_secret_test_" + std::to_string(::getpid());
  std::ofstream(path) << "from the file\n";
  ::chmod(path.c_str(), 0600);  // a secret file others may read is refused
  ::setenv("RANKMESH_SECRET_FILE", path.c_str(), 1);
  CHECK(load_secret() == std::optional<std::string>("from the file"));
  ::setenv("RANKMESH_SECRET", "from the environment", 1);
  CHECK(load_secret() == std::optional<std::string>("from the environment"));
  ::unsetenv("RANKMESH_SECRET");
  std::ofstream(path) << "\n";
  CHECK_THROWS_AS(load_secret(), Error);
  std::remove(path.c_str());
  CHECK_THROWS_AS(load_secret(), Error);
}
