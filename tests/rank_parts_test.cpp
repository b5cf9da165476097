// The parts a rank's data plane is made of, each on its own: the matcher's rule for which
// message a receive gets, group ids and layout epochs, and the stash of early frames.
#include <doctest/doctest.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "coordinator/matcher.hpp"
#include "rank/frame_stash.hpp"
#include "rank/group_ids.hpp"
#include "rankmesh/error.hpp"

using namespace rankmesh;

namespace {

// await_numbered over a fixed sequence of arriving numbers; records what each callback saw.
struct Arrivals {
  explicit Arrivals(std::vector<std::uint64_t> arriving) : numbers(std::move(arriving)) {}
  std::vector<std::uint64_t> numbers;
  std::size_t next = 0;
  std::vector<std::uint64_t> late;
  std::uint64_t fetch() {
    if (next == numbers.size()) throw std::runtime_error("nothing more arrives");
    return numbers[next++];
  }
};

Frame frame_of(std::uint32_t group, OpCode op, std::size_t payload_bytes = 0) {
  Frame frame;
  frame.header.group = group;
  frame.header.op = static_cast<std::uint32_t>(op);
  if (payload_bytes != 0)
    frame.tensors.push_back(Tensor::empty({static_cast<std::int64_t>(payload_bytes)}, DType::u8));
  return frame;
}

}  // namespace

TEST_CASE("matcher: older numbers are late and discarded, the expected one ends the wait") {
  CHECK(arrival(5, 4) == Arrival::late);
  CHECK(arrival(5, 5) == Arrival::expected);
  CHECK(arrival(5, 6) == Arrival::early);
  Arrivals arrivals({2, 3, 5});
  const bool came = await_numbered(
      5, [&] { return arrivals.fetch(); },
      [&](std::uint64_t got) {
        arrivals.late.push_back(got);
        return false;
      },
      [](std::uint64_t) { FAIL("nothing early arrived"); });
  CHECK(came);
  CHECK(arrivals.late == std::vector<std::uint64_t>{2, 3});
}

TEST_CASE("matcher: a newer number fails the wait, and a late message may end it instead") {
  Arrivals early({7});
  CHECK_THROWS_AS(await_numbered(
                      5, [&] { return early.fetch(); }, [](std::uint64_t) { return false; },
                      [](std::uint64_t got) { throw Error(Errc::mismatch, "got #" + std::to_string(got)); }),
                  Error);
  Arrivals kept({4, 5});
  const bool came = await_numbered(
      5, [&] { return kept.fetch(); }, [](std::uint64_t) { return true; },
      [](std::uint64_t) { FAIL("nothing early arrived"); });
  CHECK_FALSE(came);  // ended by the late message, which the caller kept
  CHECK(kept.next == 1);
}

TEST_CASE("group ids: a group rebuilt in a later layout epoch has another id, and only the current and next epochs are live") {
  LayoutEpochs epochs;
  const std::uint32_t world = group_id(GroupKind::world, 0, 0);
  const std::uint32_t first = group_id(GroupKind::tp, 1, epochs.begin());
  const std::uint32_t second = group_id(GroupKind::tp, 1, epochs.begin());
  CHECK(first != second);
  CHECK(epochs.stale(first));
  CHECK_FALSE(epochs.stale(second));
  CHECK_FALSE(epochs.stale(group_id(GroupKind::tp, 1, epochs.current() + 1)));  // a peer one ahead
  CHECK_FALSE(epochs.stale(world));  // the world group lives in epoch 0 for the runtime's life
  CHECK_THROWS_AS(group_id(GroupKind::tp, 1 << 16, 1), Error);
}

TEST_CASE("group ids: the epochs wrap past 0, which stays the world group's") {
  LayoutEpochs epochs;
  for (int i = 0; i < 0xFFF; ++i) epochs.begin();
  CHECK(epochs.current() == 0xFFF);
  CHECK(epochs.begin() == 1);
}

TEST_CASE("frame stash: frames come back per group and class in arrival order; one given back comes first") {
  LayoutEpochs epochs;
  FrameStash stash(2, epochs);
  const std::uint32_t tp = group_id(GroupKind::tp, 0, 0);
  const std::uint32_t pp = group_id(GroupKind::pp, 0, 0);
  Frame first = frame_of(tp, OpCode::object);
  first.header.seq = 1;
  Frame second = frame_of(tp, OpCode::object);
  second.header.seq = 2;
  stash.keep(1, frame_of(pp, OpCode::object), false);
  stash.keep(1, std::move(first), false);
  stash.keep(1, frame_of(tp, OpCode::barrier), false);
  stash.keep(1, std::move(second), false);
  Frame out;
  REQUIRE(stash.take(1, tp, false, out));
  CHECK(out.header.seq == 1);
  stash.keep(1, std::move(out), true);  // given back
  REQUIRE(stash.take(1, tp, false, out));
  CHECK(out.header.seq == 1);
  REQUIRE(stash.take(1, tp, false, out));
  CHECK(out.header.seq == 2);
  CHECK_FALSE(stash.take(1, tp, false, out));
  CHECK(stash.take(1, tp, true, out));  // the collective
  CHECK_FALSE(stash.take(0, pp, false, out));  // per source
  CHECK(stash.take(1, pp, false, out));
}

TEST_CASE("frame stash: frames of an epoch that is over are dropped on the way, and the bound counts frames") {
  LayoutEpochs epochs;
  FrameStash stash(1, epochs);
  const std::uint32_t old_group = group_id(GroupKind::tp, 0, epochs.begin());
  stash.keep(0, frame_of(old_group, OpCode::object, 8), false);
  epochs.begin();
  epochs.begin();  // two epochs later nobody will ask for it
  Frame out;
  const std::uint32_t tp = group_id(GroupKind::tp, 0, epochs.current());
  CHECK_FALSE(stash.take(0, tp, false, out));  // passes the old frame, and drops it
  CHECK_FALSE(stash.take(0, old_group, false, out));
  for (std::size_t i = 0; i < FrameStash::kMaxFrames; ++i) {
    CHECK_FALSE(stash.full(0));
    stash.keep(0, frame_of(tp, OpCode::object), false);
  }
  CHECK(stash.full(0));
  CHECK(stash.describe_full(0, 3).find("rank 0 sent more than 1024 frames") != std::string::npos);
}
