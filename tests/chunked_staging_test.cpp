// Chunked staging over tcp: a device tensor of more than one chunk (kStagingChunkBytes) sent to
// another node is copied to host chunk by chunk, and the link writes each chunk once its copy
// has run. A test device that counts its copies to host, and fails the one it is told to, shows
// that the chunks are copied one by one, that their bytes arrive intact, and that a failed copy
// fails the send with an error naming it — never bytes that were not copied — and leaves the
// receiver with an error, not waiting.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <vector>

#include "coordinator/device_staging.hpp"
#include "rankmesh/event.hpp"
#include "rankmesh/device_backend.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace {

constexpr auto kWait = std::chrono::seconds(10);

// A device whose memory is plain host memory (the opaque backend's decoys are not the point
// here), whose copies to host run on host streams, are counted, fail from `fail_from` on, and
// from `hold_from` on wait for `hold`.
class CountingDevice final : public DeviceBackend {
public:
  std::atomic<int> copies_to_host{0};
  std::atomic<int> fail_from{-1};  // the index of the first copy to host that fails; -1: none
  std::atomic<int> hold_from{-1};  // the index of the first copy to host held back; -1: none
  std::shared_ptr<Event> hold = Event::user();

  Device device() const noexcept override { return Device{DeviceType::xpu, 1}; }
  Tensor allocate(Shape shape, DType dtype) override {
    const auto bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
    if (bytes == 0) return Tensor::wrap(nullptr, shape, dtype, device(), nullptr);
    return Tensor::wrap(std::calloc(bytes, 1), shape, dtype, device(),
                        [](void* p) { std::free(p); });
  }
  std::shared_ptr<Stream> create_stream() override { return make_host_stream(*this); }
  Stream& default_stream() override { return *default_stream_; }

protected:
  void enqueue_copy_to_host(const Tensor& src, std::size_t src_offset, void* host_dst,
                            std::size_t bytes, Stream& stream) override {
    const int index = copies_to_host++;
    const bool fails = fail_from >= 0 && index >= fail_from;
    if (hold_from >= 0 && index >= hold_from) stream.wait(*hold);
    stream.enqueue([src, src_offset, host_dst, bytes, fails, index] {
      if (fails)
        throw Error(Errc::device,
                    "test device: copy to host #" + std::to_string(index) + " failed");
      std::memcpy(host_dst, static_cast<const std::byte*>(src.data()) + src_offset, bytes);
    });
  }
  void enqueue_copy_from_host(const void* host_src, std::size_t bytes, const Tensor& dst,
                              std::size_t dst_offset, Stream& stream) override {
    stream.enqueue([host_src, bytes, dst, dst_offset] {
      std::memcpy(static_cast<std::byte*>(dst.data()) + dst_offset, host_src, bytes);
    });
  }
  void enqueue_copy(const Tensor& src, std::size_t src_offset, const Tensor& dst,
                    std::size_t dst_offset, std::size_t bytes, Stream& stream) override {
    stream.enqueue([src, src_offset, dst, dst_offset, bytes] {
      std::memmove(static_cast<std::byte*>(dst.data()) + dst_offset,
                   static_cast<const std::byte*>(src.data()) + src_offset, bytes);
    });
  }

private:
  std::shared_ptr<Stream> default_stream_ = make_host_stream(*this);
};

// Two chunks and a half.
constexpr std::int64_t kElements =
    static_cast<std::int64_t>(kStagingChunkBytes / sizeof(std::int32_t)) * 5 / 2;
constexpr int kChunks = 3;

Tensor counted_on(CountingDevice& device, std::int64_t n, std::int32_t start) {
  Tensor t = device.allocate(Shape{n}, DType::i32);
  std::iota(t.data_as<std::int32_t>(), t.data_as<std::int32_t>() + n, start);
  return t;
}

bool counts_from(const Tensor& t, std::int32_t start) {
  if (const auto& ready = t.ready_event()) ready->synchronize(kWait);  // copied onto the device
  for (std::int64_t i = 0; i < t.numel(); ++i)
    if (t.data_as<std::int32_t>()[i] != start + static_cast<std::int32_t>(i)) return false;
  return true;
}

RuntimeOptions over_tcp(CountingDevice& device,
                        std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  RuntimeOptions options = options_for<OverTcp>(2);
  options.backends = {&device};
  options.timeout = timeout;
  return options;
}

// What each side saw when rank 0's first dict (a device tensor of `device`, several chunks) failed
// to send and its second (a host tensor counting from 9) followed on the same link; `between`
// runs on rank 0 after the failure.
struct FailedThenNext {
  std::string sent_error;
  std::string first_receive_error;
  TensorDict second;
};

FailedThenNext send_failing_then_next(CountingDevice& device, const RuntimeOptions& options,
                                      const std::function<void()>& between) {
  FailedThenNext seen;
  auto errors = run_world(
      [&](ParallelState& s) {
        if (s.rank() == 0) {
          try {
            s.world().send_tensor_dict(TensorDict{{"big", counted_on(device, kElements, 0)}}, 1);
          } catch (const Error& e) {
            seen.sent_error = e.what();
          }
          between();
          Tensor host = Tensor::empty({2}, DType::i32);
          std::iota(host.data_as<std::int32_t>(), host.data_as<std::int32_t>() + 2, 9);
          s.world().send_tensor_dict(TensorDict{{"host", host}}, 1);
        } else {
          try {
            (void)s.world().recv_tensor_dict(0);
          } catch (const Error& e) {
            seen.first_receive_error = e.what();
          }
          seen.second = s.world().recv_tensor_dict(0);
        }
      },
      options);
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  return seen;
}

}  // namespace

TEST_CASE("a device tensor of several chunks crosses tcp chunk by chunk, its bytes intact") {
  CountingDevice device;
  TensorDict received;
  int copies = 0;
  auto errors = run_world(
      [&](ParallelState& s) {
        if (s.rank() == 0) {
          Tensor small = Tensor::empty({3}, DType::i32);
          std::iota(small.data_as<std::int32_t>(), small.data_as<std::int32_t>() + 3, 7);
          TensorDict dict{{"a_before", small},
                          {"big", counted_on(device, kElements, -1000)},
                          {"c_small_on_device", counted_on(device, 5, 40)},
                          {"d_big_too", counted_on(device, kElements, 5)}};
          s.world().send_tensor_dict(dict, 1);
          copies = device.copies_to_host;
        } else {
          received = s.world().recv_tensor_dict(0);
        }
      },
      over_tcp(device));
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  // Each big tensor chunk by chunk, the small one whole.
  CHECK(copies == 2 * kChunks + 1);
  const Tensor& big = received.at("big").as<Tensor>();
  REQUIRE(big.device() == device.device());
  CHECK(counts_from(big, -1000));
  CHECK(counts_from(received.at("d_big_too").as<Tensor>(), 5));
  CHECK(counts_from(received.at("c_small_on_device").as<Tensor>(), 40));
  CHECK(counts_from(received.at("a_before").as<Tensor>(), 7));
}

TEST_CASE("a chunk whose copy fails after the frame began fails the send and closes the link") {
  CountingDevice device;
  device.fail_from = 1;  // the first chunk goes out, the second's copy fails
  std::string sent_error, received_error;
  auto errors = run_world(
      [&](ParallelState& s) {
        try {
          if (s.rank() == 0)
            s.world().send_tensor_dict(TensorDict{{"big", counted_on(device, kElements, 0)}}, 1);
          else
            (void)s.world().recv_tensor_dict(0);
        } catch (const Error& e) {
          (s.rank() == 0 ? sent_error : received_error) = e.what();
        }
      },
      over_tcp(device));
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CAPTURE(sent_error);
  CAPTURE(received_error);
  CHECK(sent_error.find("tensor 0's bytes [4194304, 8388608) did not reach host memory") !=
        std::string::npos);
  CHECK(sent_error.find("copy to host #1 failed") != std::string::npos);
  CHECK(sent_error.find("the link is closed") != std::string::npos);
  // The receiver learns that the link closed mid-frame; it never gets the uncopied bytes.
  CHECK(!received_error.empty());
  CHECK(received_error.find("waited") == std::string::npos);  // not its own timeout
}

TEST_CASE("a first chunk whose copy fails fails the send before anything leaves") {
  CountingDevice device;
  device.fail_from = 0;
  const FailedThenNext seen = send_failing_then_next(device, over_tcp(device), [] {});
  CAPTURE(seen.sent_error);
  CHECK(seen.sent_error.find("tensor 0's bytes [0, 4194304) did not reach host memory") !=
        std::string::npos);
  CHECK(seen.sent_error.find("the link is closed") == std::string::npos);
  // The failed send's number: nothing came for it.
  CHECK(seen.first_receive_error.find("failed there") != std::string::npos);
  CHECK(counts_from(seen.second.at("host").as<Tensor>(), 9));
}

TEST_CASE("a first chunk not copied by the deadline fails the send with the link intact") {
  CountingDevice device;
  device.hold_from = 0;
  // After the failure the copies run, into host memory the staging still holds.
  const FailedThenNext seen =
      send_failing_then_next(device, over_tcp(device, std::chrono::milliseconds(1000)),
                             [&device] { device.hold->complete(); });
  CAPTURE(seen.sent_error);
  CHECK(seen.sent_error.find("tensor 0's bytes [0, 4194304) did not reach host memory before the "
                             "deadline") != std::string::npos);
  CHECK(seen.sent_error.find("the link is closed") == std::string::npos);
  // Its own timeout, or the gap the failed send left.
  CHECK(!seen.first_receive_error.empty());
  CHECK(counts_from(seen.second.at("host").as<Tensor>(), 9));
}

TEST_CASE("a later chunk not copied by the deadline fails the send and closes the link") {
  CountingDevice device;
  device.hold_from = 1;
  std::string sent_error, received_error;
  auto errors = run_world(
      [&](ParallelState& s) {
        try {
          if (s.rank() == 0)
            s.world().send_tensor_dict(TensorDict{{"big", counted_on(device, kElements, 0)}}, 1);
          else
            (void)s.world().recv_tensor_dict(0);
        } catch (const Error& e) {
          (s.rank() == 0 ? sent_error : received_error) = e.what();
        }
        if (s.rank() == 0) device.hold->complete();
      },
      over_tcp(device, std::chrono::milliseconds(1000)));
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CAPTURE(sent_error);
  CHECK(sent_error.find("tensor 0's bytes [4194304, 8388608) did not reach host memory before "
                        "the deadline") != std::string::npos);
  CHECK(sent_error.find("the link is closed") != std::string::npos);
  CHECK(!received_error.empty());  // the link's close, or its own timeout: never the frame
}
