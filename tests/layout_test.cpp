#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "rankmesh/error.hpp"
#include "layout_support.hpp"
#include "rankmesh/layout.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace rankmesh {
// How doctest prints a kind in CAPTURE and failed comparisons.
doctest::String toString(GroupKind kind) { return to_string(kind); }
}  // namespace rankmesh

namespace {

GroupList singletons(int world) {
  GroupList groups;
  for (int rank = 0; rank < world; ++rank) groups.push_back({rank});
  return groups;
}

// The number of ranks two groups share.
std::size_t shared(const Group& a, const Group& b) {
  return static_cast<std::size_t>(
      std::count_if(a.begin(), a.end(), [&](int rank) { return std::ranges::count(b, rank) > 0; }));
}

// A layout whose kinds are listed by hand; the world kind is all ranks in order.
Layout hand_layout(int world, GroupList tp, GroupList dcp, GroupList pcp, GroupList pp,
                   GroupList dp, GroupList ep) {
  return Layout(world, {GroupList{iota(world)}, std::move(tp), std::move(dcp), std::move(pcp),
                        std::move(pp), std::move(dp), std::move(ep)});
}

std::string check_message(const Layout& layout) {
  auto error = error_of([&] { layout.check(); });
  REQUIRE(error);
  CHECK(error->code() == Errc::invalid_config);
  return error->what();
}

}  // namespace

TEST_CASE("group kinds print as vLLM names them and parse back") {
  for (GroupKind kind : kAllGroupKinds) CHECK(group_kind_from_string(to_string(kind)) == kind);
  CHECK(std::string(to_string(GroupKind::dcp)) == "dcp");
  auto error = error_of([] { group_kind_from_string("tensor"); });
  REQUIRE(error);
  CHECK(error->code() == Errc::invalid_argument);
  CHECK(std::string(error->what()).find("'tensor'") != std::string::npos);
}

TEST_CASE("vLLM's docstring example: 8 ranks, tp 2, pp 4") {
  Layout layout = contiguous_layout(config_of(8, 2, 4));
  CHECK(layout.groups(GroupKind::tp) == GroupList{{0, 1}, {2, 3}, {4, 5}, {6, 7}});
  CHECK(layout.groups(GroupKind::pp) == GroupList{{0, 2, 4, 6}, {1, 3, 5, 7}});
  // Singletons still come in vLLM's enumeration order (tp outer, pp inner).
  CHECK(layout.groups(GroupKind::dp) == singletons({0, 2, 4, 6, 1, 3, 5, 7}));
  CHECK(layout.groups(GroupKind::dcp) == singletons(8));
  CHECK(layout.groups(GroupKind::pcp) == singletons(8));
  CHECK(layout.groups(GroupKind::ep) == layout.groups(GroupKind::tp));
  CHECK(layout.groups(GroupKind::world) == GroupList{{0, 1, 2, 3, 4, 5, 6, 7}});
  CHECK(layout.coordinate(GroupKind::pp, 5) == Coordinate{1, 2});
  CHECK(layout.rank_at(GroupKind::tp, {3, 1}) == 7);
}

TEST_CASE("dp 2 x pp 2 x tp 2: DP groups run over tp outermost, then pp, and are not sorted") {
  // v(d, p, t) = 4d + 2p + t.
  Layout layout = contiguous_layout(config_of(8, 2, 2, 2));
  CHECK(layout.groups(GroupKind::tp) == GroupList{{0, 1}, {2, 3}, {4, 5}, {6, 7}});
  CHECK(layout.groups(GroupKind::pp) == GroupList{{0, 2}, {1, 3}, {4, 6}, {5, 7}});
  CHECK(layout.groups(GroupKind::dp) == GroupList{{0, 4}, {2, 6}, {1, 5}, {3, 7}});
  CHECK(layout.groups(GroupKind::ep) == GroupList{{0, 1, 4, 5}, {2, 3, 6, 7}});
  CHECK(layout.coordinate(GroupKind::dp, 6) == Coordinate{1, 1});
}

TEST_CASE("pcp 2 with dcp 2: world 16, tp 4, pp 2, worked out by hand") {
  // v(p, k, t) = 8p + 4k + t.
  Layout layout = contiguous_layout(config_of(16, 4, 2, 1, 2, 2));
  CHECK(layout.groups(GroupKind::tp) ==
        GroupList{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, {12, 13, 14, 15}});
  CHECK(layout.groups(GroupKind::dcp) ==
        GroupList{{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}, {12, 13}, {14, 15}});
  // for p, t: [v(p, k, t) for k]
  CHECK(layout.groups(GroupKind::pcp) ==
        GroupList{{0, 4}, {1, 5}, {2, 6}, {3, 7}, {8, 12}, {9, 13}, {10, 14}, {11, 15}});
  // for t, k: [v(p, k, t) for p]
  CHECK(layout.groups(GroupKind::pp) ==
        GroupList{{0, 8}, {4, 12}, {1, 9}, {5, 13}, {2, 10}, {6, 14}, {3, 11}, {7, 15}});
  // for t, p, k: [v(p, k, t)]
  CHECK(layout.groups(GroupKind::dp) ==
        singletons({0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15}));
  // for p: [v(p, k, t) for k, t]
  CHECK(layout.groups(GroupKind::ep) ==
        GroupList{{0, 1, 2, 3, 4, 5, 6, 7}, {8, 9, 10, 11, 12, 13, 14, 15}});
}

TEST_CASE("external DP is the outermost axis and repeats the inner layout") {
  SUBCASE("world 8, tp 2, pp 2: external dp 2") {
    // v(e, p, t) = 4e + 2p + t; DP groups run e, t, p.
    ParallelConfig config = config_of(8, 2, 2);
    CHECK(config.external_dp() == 2);
    Layout layout = contiguous_layout(config);
    CHECK(layout.groups(GroupKind::pp) == GroupList{{0, 2}, {1, 3}, {4, 6}, {5, 7}});
    CHECK(layout.groups(GroupKind::dp) == singletons({0, 2, 1, 3, 4, 6, 5, 7}));
    CHECK(layout.groups(GroupKind::ep) == layout.groups(GroupKind::tp));
  }
  SUBCASE("world 8, tp 2, dp 2: external dp 2") {
    // v(e, d, t) = 4e + 2d + t.
    Layout layout = contiguous_layout(config_of(8, 2, 1, 2));
    CHECK(layout.groups(GroupKind::dp) == GroupList{{0, 2}, {1, 3}, {4, 6}, {5, 7}});
    CHECK(layout.groups(GroupKind::ep) == GroupList{{0, 1, 2, 3}, {4, 5, 6, 7}});
  }
}

TEST_CASE("one rank alone is its own group of every kind") {
  Layout layout = contiguous_layout(config_of(1, 1));
  for (GroupKind kind : kAllGroupKinds) {
    CHECK(layout.groups(kind) == GroupList{{0}});
    CHECK(layout.coordinate(kind, 0) == Coordinate{0, 0});
  }
}

TEST_CASE("every valid configuration up to 64 ranks has a well-formed layout") {
  std::vector<ParallelConfig> configs = all_valid_configs(64);
  CHECK(configs.size() == 6656);
  for (const ParallelConfig& config : configs) {
    CAPTURE(config.world_size);
    CAPTURE(config.tp);
    CAPTURE(config.pp);
    CAPTURE(config.dp);
    CAPTURE(config.dcp);
    CAPTURE(config.pcp);
    Layout layout = contiguous_layout(config);
    const int world = config.world_size;
    REQUIRE(layout.world_size() == world);
    REQUIRE_NOTHROW(layout.check());

    // Checked rank by rank without an assertion each, then asserted once: 17 million
    // assertions would make this test slow under the sanitizers.
    for (GroupKind kind : kAllGroupKinds) {
      CAPTURE(kind);
      const GroupList& groups = layout.groups(kind);
      const int size = config.size_of(kind);
      REQUIRE(layout.size(kind) == size);
      REQUIRE(static_cast<int>(groups.size()) * size == world);
      // Each kind partitions the world, and coordinate and rank_at are inverse.
      std::vector<int> count(static_cast<std::size_t>(world), 0);
      bool partition = true;
      bool inverse = true;
      for (std::size_t g = 0; g < groups.size(); ++g) {
        partition = partition && static_cast<int>(groups[g].size()) == size;
        for (std::size_t i = 0; i < groups[g].size(); ++i) {
          int rank = groups[g][i];
          if (rank < 0 || rank >= world || ++count[static_cast<std::size_t>(rank)] != 1) {
            partition = false;
            continue;
          }
          Coordinate at{static_cast<int>(g), static_cast<int>(i)};
          inverse = inverse && layout.coordinate(kind, rank) == at &&
                    layout.rank_at(kind, at) == rank && &layout.group_of(kind, rank) == &groups[g];
        }
      }
      REQUIRE(partition);
      REQUIRE(std::ranges::all_of(count, [](int c) { return c == 1; }));
      REQUIRE(inverse);
    }

    // TP groups are consecutive blocks; the world group is every rank in order.
    bool tp_blocks = true;
    for (int rank = 0; rank < world; ++rank)
      tp_blocks = tp_blocks && layout.coordinate(GroupKind::tp, rank) ==
                                   Coordinate{rank / config.tp, rank % config.tp};
    REQUIRE(tp_blocks);
    REQUIRE(layout.groups(GroupKind::world) == GroupList{iota(world)});

    // DCP inside TP inside EP; DP and PCP inside EP.
    auto inside = [&](GroupKind inner, GroupKind outer) {
      for (const Group& group : layout.groups(inner))
        for (int rank : group)
          if (layout.coordinate(outer, rank).group != layout.coordinate(outer, group[0]).group)
            return false;
      return true;
    };
    REQUIRE(inside(GroupKind::dcp, GroupKind::tp));
    REQUIRE(inside(GroupKind::tp, GroupKind::ep));
    REQUIRE(inside(GroupKind::dp, GroupKind::ep));
    REQUIRE(inside(GroupKind::pcp, GroupKind::ep));

    // The four axes are independent: groups of two different axes share exactly one rank.
    const GroupKind axes[] = {GroupKind::tp, GroupKind::pcp, GroupKind::pp, GroupKind::dp};
    for (GroupKind a : axes)
      for (GroupKind b : axes) {
        if (a == b) continue;
        CAPTURE(a);
        CAPTURE(b);
        bool one_shared = true;
        for (int rank = 0; rank < world; ++rank)
          one_shared =
              one_shared && shared(layout.group_of(a, rank), layout.group_of(b, rank)) == 1;
        REQUIRE(one_shared);
      }
  }
}

TEST_CASE("an impossible configuration is an error that names the numbers") {
  auto message = [](const ParallelConfig& config) {
    auto error = error_of([&] { contiguous_layout(config); });
    REQUIRE(error);
    CHECK(error->code() == Errc::invalid_config);
    return std::string(error->what());
  };
  CHECK(message(config_of(12, 8)) ==
        "world size 12 is not divisible by dp*pp*pcp*tp = 1*1*1*8 = 8");
  CHECK(message(config_of(16, 2, 3, 1, 1, 2)) ==
        "world size 16 is not divisible by dp*pp*pcp*tp = 1*3*2*2 = 12");
  CHECK(message(config_of(4, 8)) == "world size 4 is not divisible by dp*pp*pcp*tp = 1*1*1*8 = 8");
  CHECK(message(config_of(16, 8, 1, 1, 3)) ==
        "dcp 3 does not divide tp 8 (each DCP group is a block of one TP group)");
  CHECK(message(config_of(0, 1)) == "world size must be at least 1, got 0");
  CHECK(message(config_of(8, 0)) == "tp must be at least 1, got 0");
  CHECK(message(config_of(8, 2, -1)) == "pp must be at least 1, got -1");
  CHECK(message(config_of(8, 2, 1, 0)) == "dp must be at least 1, got 0");
  CHECK(message(config_of(8, 2, 1, 1, 0)) == "dcp must be at least 1, got 0");
  CHECK(message(config_of(8, 2, 1, 1, 1, 0)) == "pcp must be at least 1, got 0");
  // Sizes whose product overflows an int are still refused, not wrapped around.
  CHECK(message(config_of(64, 65536, 65536, 65536, 1, 65536)) ==
        "world size 64 is not divisible by dp*pp*pcp*tp = 65536*65536*65536*65536, which is more "
        "than the world size");
}

TEST_CASE("coordinates out of range are argument errors") {
  Layout layout = contiguous_layout(config_of(8, 2, 4));
  auto code_of = [](auto&& action) -> std::optional<Errc> {
    auto error = error_of(action);
    return error ? std::optional(error->code()) : std::nullopt;
  };
  CHECK(code_of([&] { layout.coordinate(GroupKind::tp, 8); }) == Errc::invalid_argument);
  CHECK(code_of([&] { layout.coordinate(GroupKind::tp, -1); }) == Errc::invalid_argument);
  CHECK(code_of([&] { layout.group_of(GroupKind::pp, 9); }) == Errc::invalid_argument);
  CHECK(code_of([&] { layout.rank_at(GroupKind::pp, {2, 0}); }) == Errc::invalid_argument);
  CHECK(code_of([&] { layout.rank_at(GroupKind::pp, {1, 4}); }) == Errc::invalid_argument);
  CHECK(code_of([&] { layout.rank_at(GroupKind::pp, {-1, 0}); }) == Errc::invalid_argument);
  CHECK(std::string(error_of([&] { layout.coordinate(GroupKind::tp, 8); })->what()) ==
        "rank 8 is outside the world of 8 ranks");
}

TEST_CASE("check() names the group that breaks a rule") {
  SUBCASE("a TP and a PP group sharing two ranks") {
    Layout layout = hand_layout(8, {{0, 1, 2, 7}, {4, 5, 6, 3}}, singletons(8), singletons(8),
                                {{0, 4}, {1, 5}, {2, 7}, {6, 3}}, singletons(8),
                                {{0, 1, 2, 7}, {4, 5, 6, 3}});
    CHECK(check_message(layout) ==
          "pp group 2 [2, 7] intersects tp group 0 [0, 1, 2, 7] in 2 ranks (2, 7); a TP and a PP "
          "group may share at most one rank");
  }
  SUBCASE("a rank in no group") {
    Layout layout = hand_layout(8, {{0, 1}, {2, 3}, {4, 5}, {6, 7}}, singletons(8), singletons(8),
                                singletons(8), singletons({0, 1, 2, 3, 4, 6, 7}),
                                {{0, 1}, {2, 3}, {4, 5}, {6, 7}});
    CHECK(check_message(layout) == "rank 5 is in no dp group");
    // Unchecked, the uncovered rank has no coordinate rather than a made-up one.
    auto error = error_of([&] { layout.coordinate(GroupKind::dp, 5); });
    REQUIRE(error);
    CHECK(std::string(error->what()) == "rank 5 is in no dp group");
  }
  SUBCASE("a rank in two groups") {
    Layout layout = hand_layout(4, singletons(4), singletons(4), singletons(4), singletons(4),
                                singletons({3, 1, 3, 0}), singletons(4));
    CHECK(check_message(layout) == "rank 3 is in dp groups 0 and 2");
  }
  SUBCASE("a rank twice in one group") {
    Layout layout = hand_layout(4, {{1, 1}, {2, 3}}, singletons(4), singletons(4), singletons(4),
                                singletons(4), {{0, 1}, {2, 3}});
    CHECK(check_message(layout) == "tp group 0 [1, 1] holds rank 1 twice");
  }
  SUBCASE("groups of different sizes") {
    Layout layout = hand_layout(7, {{0, 1, 2, 3}, {4, 5, 6}}, singletons(7), singletons(7),
                                singletons(7), singletons(7), {{0, 1, 2, 3}, {4, 5, 6}});
    CHECK(check_message(layout) == "tp group 1 has 3 ranks, group 0 has 4");
  }
  SUBCASE("a rank outside the world") {
    Layout layout = hand_layout(4, {{0, 1}, {2, 9}}, singletons(4), singletons(4), singletons(4),
                                singletons(4), {{0, 1}, {2, 3}});
    CHECK(check_message(layout) == "tp group 1 [2, 9] holds rank 9, outside the world of 4 ranks");
  }
  SUBCASE("a DCP group across two TP groups") {
    Layout layout = hand_layout(8, {{0, 1, 2, 4}, {3, 5, 6, 7}}, {{0, 1}, {2, 3}, {4, 5}, {6, 7}},
                                singletons(8), singletons(8), singletons(8),
                                {{0, 1, 2, 4}, {3, 5, 6, 7}});
    CHECK(check_message(layout) == "dcp group 1 [2, 3] is not inside one tp group");
  }
  SUBCASE("a TP group across two EP groups") {
    Layout layout = hand_layout(8, {{0, 1}, {2, 3}, {4, 5}, {6, 7}}, singletons(8), singletons(8),
                                singletons(8), {{0, 4}, {2, 6}, {1, 5}, {3, 7}},
                                {{0, 1, 2, 4}, {3, 5, 6, 7}});
    CHECK(check_message(layout) == "tp group 1 [2, 3] is not inside one ep group");
  }
  SUBCASE("a world kind of more than one group") {
    Layout layout(2, {GroupList{{0}, {1}}, singletons(2), singletons(2), singletons(2),
                      singletons(2), singletons(2), singletons(2)});
    CHECK(check_message(layout) ==
          "the world kind has 2 groups; it must be one group of all 2 ranks");
  }
  SUBCASE("an empty world") {
    Layout layout(0, {});
    CHECK(check_message(layout) == "world size must be at least 1, got 0");
  }
}

TEST_CASE("long groups are cut short in messages") {
  GroupList tp{iota(40)};
  tp[0][39] = 40;
  Layout layout = hand_layout(40, tp, singletons(40), singletons(40), singletons(40),
                              singletons(40), tp);
  CHECK(check_message(layout) ==
        "tp group 0 [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, ... (40 ranks)] holds "
        "rank 40, outside the world of 40 ranks");
}

TEST_CASE("group lists keep their order: it defines rank_in_group") {
  Layout layout = hand_layout(4, {{3, 2, 1, 0}}, singletons(4), singletons(4), singletons(4),
                              singletons(4), {{1, 3, 0, 2}});
  REQUIRE_NOTHROW(layout.check());
  CHECK(layout.coordinate(GroupKind::tp, 3) == Coordinate{0, 0});
  CHECK(layout.coordinate(GroupKind::tp, 0) == Coordinate{0, 3});
  CHECK(layout.coordinate(GroupKind::ep, 0) == Coordinate{0, 2});
  CHECK(layout.rank_at(GroupKind::ep, {0, 1}) == 3);
}
