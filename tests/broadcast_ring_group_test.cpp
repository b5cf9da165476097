// broadcast_object through the shared-memory ring between two ranks of one process (their
// contexts say they share memory; the channels are in-process): a ring announcement that comes
// after a member's broadcast timed out still attaches the member, whichever receive meets it
// first; and a source that goes away right after a broadcast waits for a late reader.
#include <doctest/doctest.h>

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <memory>
#include <thread>

#include "inproc/inproc_channel.hpp"
#include "coordinator/group_state.hpp"
#include "rank_context.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/group_coordinator.hpp"
#include "shm_test_support.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;
using rankmesh::testing::configured;

namespace {

// Two ranks of one world whose contexts share memory, so broadcast_object uses a ring.
struct TwoRanks {
  explicit TwoRanks(std::chrono::milliseconds timeout,
                    std::function<void(const std::string&)> log = [](const std::string&) {}) {
    auto zero_to_one = std::make_shared<InprocChannel>();
    auto one_to_zero = std::make_shared<InprocChannel>();
    for (int r = 0; r < 2; ++r) {
      context[r] = std::make_shared<RankContext>(
          r, 2, r, timeout, [](const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype); },
          std::vector<DeviceBackend*>{}, log);
      std::vector<std::shared_ptr<Channel>> out(2), in(2);
      out[static_cast<std::size_t>(1 - r)] = r == 0 ? zero_to_one : one_to_zero;
      in[static_cast<std::size_t>(1 - r)] = r == 0 ? one_to_zero : zero_to_one;
      context[r]->connect(std::move(out), std::move(in), RankContext::Locality{{true, true}, {true, true}});
      group[r] = std::make_unique<GroupCoordinator>(make_group_state(context[r], GroupKind::world, 0, Group{0, 1}));
    }
  }
  std::shared_ptr<RankContext> context[2];
  std::unique_ptr<GroupCoordinator> group[2];
};

Value text(const char* s) { return Value(std::string(s)); }

Tensor filled(float value) {
  Tensor t = Tensor::empty({2}, DType::f32);
  t.data_as<float>()[0] = t.data_as<float>()[1] = value;
  return t;
}

}  // namespace

TEST_CASE("broadcast_object: a member whose broadcast timed out before the ring was announced attaches later") {
  // The member's first broadcast times out before the source has broadcast at all; the source's
  // announcement then arrives late. It must not be discarded as stale.
  SUBCASE("the member's next broadcast meets the late announcement") {
    TwoRanks world(configured(300ms));
    CHECK_THROWS_AS(world.group[1]->broadcast_object(Value(None{}), 0), Error);  // timed out
    CHECK(world.group[0]->broadcast_object(text("first"), 0) == text("first"));   // announces
    CHECK(world.group[0]->broadcast_object(text("second"), 0) == text("second"));
    CHECK(world.group[1]->broadcast_object(Value(None{}), 0) == text("second"));
    CHECK(world.group[0]->broadcast_object(text("third"), 0) == text("third"));
    CHECK(world.group[1]->broadcast_object(Value(None{}), 0) == text("third"));
  }
  SUBCASE("another collective meets the late announcement first") {
    TwoRanks world(configured(300ms));
    CHECK_THROWS_AS(world.group[1]->broadcast_object(Value(None{}), 0), Error);  // timed out
    CHECK(world.group[0]->broadcast_object(text("first"), 0) == text("first"));   // announces
    Tensor sums[2];
    std::thread other([&] { sums[0] = world.group[0]->all_reduce(filled(1.0f)); });
    sums[1] = world.group[1]->all_reduce(filled(2.0f));
    other.join();
    CHECK(sums[1].data_as<float>()[0] == 3.0f);
    CHECK(world.group[0]->broadcast_object(text("after"), 0) == text("after"));
    CHECK(world.group[1]->broadcast_object(Value(None{}), 0) == text("after"));
  }
}

TEST_CASE("broadcast_object: a source torn down right after a broadcast waits for a late reader") {
  TwoRanks world(configured(10s));
  std::atomic<pid_t> source_thread{0};
  std::atomic<bool> torn_down{false};
  std::thread source([&] {
    source_thread = static_cast<pid_t>(gettid());
    world.group[0]->broadcast_object(text("last words"), 0);
    world.group[0].reset();  // destroy_model_parallel
    torn_down = true;
  });
  // The reader comes late: once the source has gone away, or is parked waiting for it.
  const Deadline deadline = deadline_after(configured(10s));
  while (!torn_down && !(source_thread != 0 && rankmesh::testing::thread_sleeps(source_thread)) &&
         Clock::now() < deadline)
    std::this_thread::yield();
  CHECK(world.group[1]->broadcast_object(Value(None{}), 0) == text("last words"));
  source.join();
  CHECK(torn_down);
}

TEST_CASE("broadcast_object: broadcasts through the ring are in the operation history a failure logs") {
  std::mutex mutex;
  std::string logged;
  TwoRanks world(configured(300ms), [&](const std::string& line) {
    std::lock_guard lock(mutex);
    logged += line + "\n";
  });
  for (const char* object : {"first", "second", "third"}) {
    CHECK(world.group[0]->broadcast_object(text(object), 0) == text(object));
    CHECK(world.group[1]->broadcast_object(Value(None{}), 0) == text(object));
  }
  // Rank 1 waits for a fourth broadcast that never comes: its timeout logs its last operations.
  CHECK_THROWS_AS(world.group[1]->broadcast_object(Value(None{}), 0), Error);
  std::lock_guard lock(mutex);
  CHECK(logged.find("last operations of rank 1") != std::string::npos);
  // #0 announced the ring over the channel; #1 and #2 went through the ring only.
  CHECK(logged.find("broadcast_object #1 on world:0: received 0 payload bytes from rank 0") !=
        std::string::npos);
  CHECK(logged.find("broadcast_object #2 on world:0: received 0 payload bytes from rank 0") !=
        std::string::npos);
}
