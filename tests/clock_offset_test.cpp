// ClockOffset (lib/src/clock_offset.hpp): a rank on another host estimates its clock against rank
// 0's from heartbeats, keeping the sample with the smallest round trip among the last kWindow.
#include <doctest/doctest.h>

#include "clock_offset.hpp"

using namespace rankmesh;

TEST_CASE("clock offset: the same host is offset 0 exactly, whatever the samples say") {
  ClockOffset clock;
  clock.sample(1000, 999999, 3000);
  const auto estimate = clock.estimate();
  CHECK(estimate.method == "same host");
  CHECK(estimate.offset_us == 0);
  CHECK(estimate.error_us == 0);
}

TEST_CASE("clock offset: another host takes the sample with the smallest round trip") {
  ClockOffset clock;
  clock.set_shares_rank0_clock(false);
  CHECK(clock.estimate().method == "none yet");
  // Rank 0's clock runs 1 ms ahead; each sample's legs differ.
  clock.sample(0, 1'000'000 + 40'000, 100'000);   // round trip 100 us: 1040 us at midpoint 50 us -> 990 us
  clock.sample(200'000, 1'230'000, 260'000);      // round trip 60 us: midpoint 230 us -> 1000 us
  clock.sample(400'000, 1'500'000, 600'000);      // round trip 200 us
  auto estimate = clock.estimate();
  CHECK(estimate.method == "ping-pong");
  CHECK(estimate.offset_us == doctest::Approx(1000.0));
  CHECK(estimate.error_us == doctest::Approx(30.0));
  // Impossible samples change nothing.
  clock.sample(500, 1'000'500, 400);  // answered before sent
  clock.sample(-1, 5, 10);
  clock.sample(0, -1, 10);            // an answer whose clock did not parse
  CHECK(clock.estimate().offset_us == doctest::Approx(1000.0));
}

TEST_CASE("clock offset: the estimate follows drift once the best sample leaves the window") {
  ClockOffset clock;
  clock.set_shares_rank0_clock(false);
  clock.sample(0, 1'000'010, 20);  // round trip 20 ns, offset 1 ms
  for (std::size_t i = 1; i < ClockOffset::kWindow; ++i) {
    const std::int64_t t = static_cast<std::int64_t>(i) * 1'000'000;
    clock.sample(t, t + 2'000'000 + 500, t + 1000);  // round trip 1 us, offset 2 ms
  }
  CHECK(clock.estimate().offset_us == doctest::Approx(1000.0).epsilon(0.001));
  const std::int64_t t = 100'000'000;
  clock.sample(t, t + 2'000'000 + 500, t + 1000);  // the 20 ns sample is pushed out
  CHECK(clock.estimate().offset_us == doctest::Approx(2000.0));
  CHECK(clock.estimate().error_us == doctest::Approx(0.5));
}
