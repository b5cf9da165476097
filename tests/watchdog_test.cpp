// The watchdog (coordinator/watchdog.hpp): a receive still waiting past its fraction of the
// timeout logs one line naming the operation, whom it waits for, who is behind and what was last
// heard from them — once per operation, and the operation still completes (or times out) as
// before.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include "rank_world.hpp"
#include "rankmesh/error.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;
using namespace std::chrono_literals;

namespace {

std::size_t count(const std::string& text, const std::string& fragment) {
  std::size_t n = 0;
  for (std::size_t at = text.find(fragment); at != std::string::npos; at = text.find(fragment, at + 1)) ++n;
  return n;
}

Tensor ones(std::int64_t n) {
  Tensor t = Tensor::empty({n}, DType::f32);
  for (std::int64_t i = 0; i < n; ++i) t.data_as<float>()[i] = 1;
  return t;
}

}  // namespace

TEST_CASE("watchdog: members waiting on a delayed member's all_reduce name it once, and the "
          "result still comes") {
  RankWorld world({0, 0, 0}, inproc_transport(), inproc_transport(), 5s);
  const Group members{0, 1, 2};
  auto errors = world.run([&](int rank) {
    world.context(rank)->set_watchdog(0.04);  // 200 ms of 5 s
    GroupCoordinator group(make_group_state(world.context(rank), GroupKind::tp, 0, members));
    group.all_reduce(ones(4));  // everyone in step: #0
    if (rank == 2) std::this_thread::sleep_for(600ms);
    Tensor sum = group.all_reduce(ones(4));  // #1: ranks 0 and 1 wait for rank 2
    if (sum.data_as<float>()[0] != 3) throw std::runtime_error("wrong sum");
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  const std::string log = world.log();
  CHECK_MESSAGE(count(log, "rankmesh watchdog:") == 2, log);
  for (const char* rank : {"tp:0 group rank 0 (rank 0) all_reduce #", "tp:0 group rank 1 (rank 1) all_reduce #"})
    CHECK_MESSAGE(count(log, rank) == 1, log);
  CHECK_MESSAGE(count(log, "(all_reduce) has waited") == 2, log);
  CHECK_MESSAGE(count(log, "of its 5000 ms timeout for group rank 2 (rank 2)") == 2, log);
  CHECK_MESSAGE(count(log, "not heard from in this collective yet: ") == 2, log);
  CHECK_MESSAGE(count(log, "group rank 2 (rank 2) (last: #") == 2, log);
  CHECK_MESSAGE(count(log, "last heard from rank 2: all_reduce #") == 2, log);
}

TEST_CASE("watchdog: a receive waiting on a late sender names it and its last message; off, "
          "nothing is logged") {
  for (const double fraction : {0.04, 0.0}) {
    CAPTURE(fraction);
    RankWorld world({0, 0}, inproc_transport(), inproc_transport(), 5s);
    auto errors = world.run([&](int rank) {
      world.context(rank)->set_watchdog(fraction);
      GroupCoordinator group(make_group_state(world.context(rank), GroupKind::pp, 0, Group{0, 1}));
      if (rank == 0) {
        group.send_object(Value(1), 1);
        std::this_thread::sleep_for(600ms);
        group.send_object(Value(2), 1);
      } else {
        group.recv_object(0);
        if (!(group.recv_object(0) == Value(2))) throw std::runtime_error("wrong object");
      }
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    const std::string log = world.log();
    if (fraction == 0) {
      CHECK_MESSAGE(log.find("watchdog") == std::string::npos, log);
    } else {
      CHECK_MESSAGE(count(log, "rankmesh watchdog:") == 1, log);
      CHECK_MESSAGE(log.find("pp:0 group rank 1 (rank 1) recv_object #1 (send_object) has waited") !=
                        std::string::npos, log);
      CHECK_MESSAGE(log.find("for group rank 0 (rank 0); its last message here was #0") != std::string::npos, log);
      CHECK_MESSAGE(log.find("last heard from rank 0: send_object #0 on pp:0") != std::string::npos, log);
    }
  }
}
