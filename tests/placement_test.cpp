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
#include "rankmesh/placement.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace {

SupernodeGeometry geometry_of(int devices_per_node, int tp_nodes) {
  SupernodeGeometry geometry;
  geometry.devices_per_node = devices_per_node;
  geometry.tp_nodes = tp_nodes;
  return geometry;
}

// An explicit file for `world` ranks; each argument is the JSON text of one kind's lists.
std::string groups_json(int world, const std::string& tp, const std::string& dcp,
                        const std::string& pcp, const std::string& pp, const std::string& dp,
                        const std::string& ep) {
  return "{\"world_size\": " + std::to_string(world) + ", \"tp\": " + tp + ", \"dcp\": " + dcp +
         ", \"pcp\": " + pcp + ", \"pp\": " + pp + ", \"dp\": " + dp + ", \"ep\": " + ep + "}";
}

Error explicit_error(const std::string& json_text) {
  auto error = error_of([&] { explicit_layout(json_text); });
  REQUIRE_MESSAGE(error, json_text);
  return *error;
}

}  // namespace

TEST_CASE("placement kinds print and parse back") {
  for (PlacementKind kind :
       {PlacementKind::contiguous, PlacementKind::supernode, PlacementKind::explicit_groups})
    CHECK(placement_kind_from_string(to_string(kind)) == kind);
  CHECK(std::string(to_string(PlacementKind::explicit_groups)) == "explicit");
  auto error = error_of([] { placement_kind_from_string("ring"); });
  REQUIRE(error);
  CHECK(error->code() == Errc::invalid_argument);
  CHECK(std::string(error->what()) ==
        "unknown placement 'ring'; expected contiguous, supernode or explicit");
}

TEST_CASE("supernode: the vendor table for 16 ranks, tp 8, pp 2 comes out exactly") {
  Layout layout = supernode_layout(config_of(16, 8, 2), SupernodeGeometry{});
  const GroupList every_rank_alone =
      singletons({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
  // The vendor plugin's four hard-coded lists, group order included.
  CHECK(layout.groups(GroupKind::tp) ==
        GroupList{{0, 1, 2, 3, 8, 9, 10, 11}, {4, 5, 6, 7, 12, 13, 14, 15}});
  CHECK(layout.groups(GroupKind::pp) == GroupList{{0, 4}, {1, 5}, {2, 6}, {3, 7},
                                                  {8, 12}, {9, 13}, {10, 14}, {11, 15}});
  CHECK(layout.groups(GroupKind::dp) == every_rank_alone);
  CHECK(layout.groups(GroupKind::ep) == layout.groups(GroupKind::tp));
  CHECK(layout.groups(GroupKind::dcp) == every_rank_alone);
  CHECK(layout.groups(GroupKind::pcp) == every_rank_alone);
  CHECK(layout.groups(GroupKind::world) == GroupList{iota(16)});
  CHECK(to_json(layout) ==
        "{\"world_size\": 16, \"tp\": [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]], "
        "\"dcp\": [[0], [1], [2], [3], [4], [5], [6], [7], [8], [9], [10], [11], [12], [13], [14], "
        "[15]], \"pcp\": [[0], [1], [2], [3], [4], [5], [6], [7], [8], [9], [10], [11], [12], "
        "[13], [14], [15]], \"pp\": [[0, 4], [1, 5], [2, 6], [3, 7], [8, 12], [9, 13], [10, 14], "
        "[11, 15]], \"dp\": [[0], [1], [2], [3], [4], [5], [6], [7], [8], [9], [10], [11], [12], "
        "[13], [14], [15]], \"ep\": [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]}");

  const ParallelConfig config = config_of(16, 8, 2);
  CHECK(supernode_physical_rank(config, {}, 3) == 3);
  CHECK(supernode_physical_rank(config, {}, 4) == 8);
  CHECK(supernode_physical_rank(config, {}, 8) == 4);
  CHECK(supernode_physical_rank(config, {}, 15) == 15);
}

TEST_CASE("supernode: groups listed by first member, members in logical order (16 ranks, tp 4, pp 2, dp 2)") {
  // Worked by hand: logical rank d*8 + p*4 + t is TP group g = 2d + p, member t, which goes to
  // node t/2, device 2g + t%2. Mapped in vLLM's order, the PP and DP lists would start
  // [0, 2], [1, 3], [8, 10] and [0, 4], [2, 6], [1, 5]; listed by first member they read:
  Layout layout = supernode_layout(config_of(16, 4, 2, 2), SupernodeGeometry{});
  CHECK(layout.groups(GroupKind::tp) ==
        GroupList{{0, 1, 8, 9}, {2, 3, 10, 11}, {4, 5, 12, 13}, {6, 7, 14, 15}});
  CHECK(layout.groups(GroupKind::pp) == GroupList{{0, 2}, {1, 3}, {4, 6}, {5, 7},
                                                  {8, 10}, {9, 11}, {12, 14}, {13, 15}});
  CHECK(layout.groups(GroupKind::dp) == GroupList{{0, 4}, {1, 5}, {2, 6}, {3, 7},
                                                  {8, 12}, {9, 13}, {10, 14}, {11, 15}});
  // EP members keep vLLM's order (dp outer, tp inner), which is not ascending.
  CHECK(layout.groups(GroupKind::ep) ==
        GroupList{{0, 1, 8, 9, 4, 5, 12, 13}, {2, 3, 10, 11, 6, 7, 14, 15}});
  CHECK(layout.groups(GroupKind::world) == GroupList{iota(16)});
  // Rank-in-group follows the members' order, wherever the group is listed.
  CHECK(layout.coordinate(GroupKind::ep, 4).group == 0);
  CHECK(layout.coordinate(GroupKind::ep, 4).rank_in_group == 4);
  CHECK(layout.coordinate(GroupKind::pp, 6).group == 2);
  CHECK(layout.coordinate(GroupKind::pp, 6).rank_in_group == 1);
}

TEST_CASE("supernode with DCP keeps each DCP group inside its TP group") {
  // Left contiguous, as the vendor plugin leaves it, DCP group 0 would be [0, ..., 7] and span
  // both TP groups; mapped through the permutation it is TP group 0 itself.
  Layout whole = supernode_layout(config_of(16, 8, 2, 1, 8), SupernodeGeometry{});
  CHECK(whole.groups(GroupKind::dcp) == whole.groups(GroupKind::tp));
  Layout pairs = supernode_layout(config_of(16, 8, 2, 1, 2), SupernodeGeometry{});
  CHECK(pairs.groups(GroupKind::dcp) == GroupList{{0, 1}, {2, 3}, {4, 5}, {6, 7},
                                                  {8, 9}, {10, 11}, {12, 13}, {14, 15}});
}

TEST_CASE("supernode generalises: every geometry that fits gives a placement with its promise") {
  int placed = 0;
  for (const ParallelConfig& config : all_valid_configs(64)) {
    // DCP only rides along with the permutation, so its sizes are swept with the other axes at
    // 1 (external DP still varies); that keeps this test quick under the sanitizers.
    if (config.dcp != 1 && config.pp * config.dp * config.pcp != 1) continue;
    const Layout logical = contiguous_layout(config);
    for (int devices : {1, 2, 3, 4, 6, 8, 16}) {
      for (int nodes : divisors(config.tp)) {
        CAPTURE(config.world_size);
        CAPTURE(config.tp);
        CAPTURE(config.pp);
        CAPTURE(config.dp);
        CAPTURE(config.dcp);
        CAPTURE(config.pcp);
        CAPTURE(devices);
        CAPTURE(nodes);
        const int per_node = config.tp / nodes;
        const bool fits = devices % per_node == 0 && config.world_size % (nodes * devices) == 0;
        const SupernodeGeometry geometry = geometry_of(devices, nodes);
        if (!fits) {
          // Whether a geometry fits does not depend on dcp or pcp; one error per shape will do.
          if (config.dcp != 1 || config.pcp != 1) continue;
          auto error = error_of([&] { supernode_layout(config, geometry); });
          REQUIRE(error);
          REQUIRE(error->code() == Errc::invalid_config);
          continue;
        }
        ++placed;
        Layout layout = supernode_layout(config, geometry);
        REQUIRE_NOTHROW(layout.check());

        // A bijection of the world.
        std::vector<int> physical;
        for (int rank = 0; rank < config.world_size; ++rank)
          physical.push_back(supernode_physical_rank(config, geometry, rank));
        std::vector<int> sorted = physical;
        std::ranges::sort(sorted);
        REQUIRE(sorted == iota(config.world_size));

        // Every kind but the world is the contiguous layout mapped rank by rank, members in
        // their logical order, the groups listed in ascending order of their first member.
        for (GroupKind kind : kAllGroupKinds) {
          if (kind == GroupKind::world) continue;
          GroupList mapped = logical.groups(kind);
          for (Group& group : mapped)
            for (int& rank : group) rank = physical[static_cast<std::size_t>(rank)];
          const GroupList& listed = layout.groups(kind);
          REQUIRE(std::ranges::is_permutation(listed, mapped));
          REQUIRE(std::ranges::is_sorted(listed, {}, [](const Group& group) { return group.front(); }));
        }
        REQUIRE(layout.groups(GroupKind::world) == GroupList{iota(config.world_size)});

        // Each TP group: tp_nodes distinct nodes, tp/tp_nodes consecutive devices on each.
        for (const Group& group : layout.groups(GroupKind::tp)) {
          std::set<int> nodes_used;
          bool consecutive = true;
          for (std::size_t chunk = 0; chunk < group.size(); chunk += per_node) {
            nodes_used.insert(group[chunk] / devices);
            for (int i = 0; i < per_node; ++i)
              consecutive = consecutive && group[chunk + i] == group[chunk] + i;
            consecutive =
                consecutive && group[chunk + per_node - 1] / devices == group[chunk] / devices;
          }
          REQUIRE(consecutive);
          REQUIRE(static_cast<int>(nodes_used.size()) == nodes);
        }

        // DCP inside TP.
        bool dcp_inside = true;
        for (const Group& group : layout.groups(GroupKind::dcp))
          for (int rank : group)
            dcp_inside = dcp_inside && layout.coordinate(GroupKind::tp, rank).group ==
                                           layout.coordinate(GroupKind::tp, group[0]).group;
        REQUIRE(dcp_inside);

        // One node per TP group, its devices in order: no rank moves, so every group is the
        // contiguous layout's (only the order of the list may differ).
        if (nodes == 1) {
          REQUIRE(physical == iota(config.world_size));
          for (GroupKind kind : kAllGroupKinds)
            REQUIRE(std::ranges::is_permutation(layout.groups(kind), logical.groups(kind)));
        }
      }
    }
  }
  CHECK(placed > 1000);
}

TEST_CASE("supernode geometries that do not fit are errors naming the numbers") {
  auto message = [](const ParallelConfig& config, const SupernodeGeometry& geometry) {
    auto error = error_of([&] { supernode_layout(config, geometry); });
    REQUIRE(error);
    CHECK(error->code() == Errc::invalid_config);
    auto by_rank = error_of([&] { supernode_physical_rank(config, geometry, 0); });
    REQUIRE(by_rank);
    CHECK(std::string(by_rank->what()) == error->what());
    return std::string(error->what());
  };
  CHECK(message(config_of(24, 8), geometry_of(8, 3)) ==
        "supernode placement: tp 8 is not divisible by tp nodes 3 (a TP group takes the same "
        "number of devices from each of its nodes)");
  CHECK(message(config_of(24, 8), geometry_of(6, 2)) ==
        "supernode placement: devices per node 6 is not divisible by tp/tp_nodes = 8/2 = 4 (the "
        "devices one TP group takes from a node)");
  CHECK(message(config_of(8, 8), geometry_of(8, 2)) ==
        "supernode placement: world size 8 is not divisible by tp_nodes*devices_per_node = 2*8 = "
        "16");
  CHECK(message(config_of(16, 8), geometry_of(0, 2)) ==
        "devices per node must be at least 1, got 0");
  CHECK(message(config_of(16, 8), geometry_of(8, -1)) == "tp nodes must be at least 1, got -1");
  // The configuration itself is checked first.
  CHECK(message(config_of(12, 8), geometry_of(8, 2)) ==
        "world size 12 is not divisible by dp*pp*pcp*tp = 1*1*1*8 = 8");

  auto out_of_world = error_of([] { supernode_physical_rank(config_of(16, 8, 2), {}, 16); });
  REQUIRE(out_of_world);
  CHECK(out_of_world->code() == Errc::invalid_argument);
  CHECK(std::string(out_of_world->what()) == "logical rank 16 is outside the world of 16 ranks");
}

TEST_CASE("to_json prints world_size then tp, dcp, pcp, pp, dp, ep, in list order") {
  CHECK(to_json(contiguous_layout(config_of(4, 2))) ==
        "{\"world_size\": 4, \"tp\": [[0, 1], [2, 3]], \"dcp\": [[0], [1], [2], [3]], "
        "\"pcp\": [[0], [1], [2], [3]], \"pp\": [[0], [1], [2], [3]], \"dp\": [[0], [1], [2], "
        "[3]], \"ep\": [[0, 1], [2, 3]]}");
}

TEST_CASE("explicit: to_json then explicit_layout gives the same layout back") {
  for (const ParallelConfig& config : all_valid_configs(64)) {
    // The reader sees only lists: DCP sizes are swept with the other axes at 1.
    if (config.dcp != 1 && config.pp * config.dp * config.pcp != 1) continue;
    CAPTURE(config.world_size);
    CAPTURE(config.tp);
    CAPTURE(config.pp);
    CAPTURE(config.dp);
    CAPTURE(config.dcp);
    CAPTURE(config.pcp);
    Layout layout = contiguous_layout(config);
    Layout read = explicit_layout(to_json(layout));
    REQUIRE(read == layout);
    REQUIRE(implied_config(read) == config);
  }
  Layout supernode = supernode_layout(config_of(32, 8, 2, 2, 4), SupernodeGeometry{});
  CHECK(explicit_layout(to_json(supernode)) == supernode);
}

TEST_CASE("explicit: any layout that keeps the rules is accepted, in its own order") {
  // Not vLLM's order, but every rule holds: TP groups reversed and interleaved, EP likewise.
  Layout layout = explicit_layout(groups_json(4, "[[3, 1], [2, 0]]", "[[3], [1], [2], [0]]",
                                              "[[0], [1], [2], [3]]", "[[0, 1], [2, 3]]",
                                              "[[0], [1], [2], [3]]", "[[1, 3], [0, 2]]"));
  CHECK(layout.coordinate(GroupKind::tp, 3) == Coordinate{0, 0});
  CHECK(layout.coordinate(GroupKind::tp, 0) == Coordinate{1, 1});
  CHECK(layout.coordinate(GroupKind::ep, 3) == Coordinate{0, 1});
  CHECK(implied_config(layout) == config_of(4, 2, 2));
  CHECK(layout.groups(GroupKind::world) == GroupList{{0, 1, 2, 3}});
}

TEST_CASE("explicit: input that is not the schema is malformed, naming the key") {
  const std::string singles = "[[0], [1], [2], [3]]";
  const std::string pairs = "[[0, 1], [2, 3]]";
  auto with_tp = [&](const std::string& tp) {
    return groups_json(4, tp, singles, singles, singles, singles, pairs);
  };
  auto with_world = [&](const std::string& world) {
    return "{\"world_size\": " + world + ", \"tp\": " + pairs + ", \"dcp\": " + singles +
           ", \"pcp\": " + singles + ", \"pp\": " + singles + ", \"dp\": " + singles +
           ", \"ep\": " + pairs + "}";
  };
  struct Case {
    std::string text;
    std::string message;
  };
  const Case cases[] = {
      {"", "groups JSON: parse error at line 1, column 1: syntax error while parsing value - "
           "unexpected end of input; expected '[', '{', or a literal"},
      {"{\"world_size\": 4,", "groups JSON: parse error at line 1, column 18: syntax error while "
                              "parsing object key - unexpected end of input; expected string "
                              "literal"},
      {"[1, 2]", "groups JSON: expected an object with \"world_size\", \"tp\", \"dcp\", \"pcp\", "
                 "\"pp\", \"dp\" and \"ep\", got array"},
      {"{\"tp\": []}", "groups JSON: missing \"world_size\""},
      {"{\"world_size\": 4, \"tp\": [], \"tpp\": []}",
       "groups JSON: unknown key \"tpp\"; expected world_size, tp, dcp, pcp, pp, dp and ep"},
      {"{\"world_size\": 4, \"tp\": " + pairs + "}", "groups JSON: missing \"dcp\""},
      {with_world("\"4\""), "groups JSON: \"world_size\" must be an integer, got \"4\""},
      {with_world("4.0"), "groups JSON: \"world_size\" must be an integer, got 4.0"},
      {with_world("[4]"), "groups JSON: \"world_size\" must be an integer, got an array"},
      {with_world("0"), "groups JSON: \"world_size\" 0 is outside 1..1048576"},
      {with_world("-4"), "groups JSON: \"world_size\" -4 is outside 1..1048576"},
      {with_world("1048577"), "groups JSON: \"world_size\" 1048577 is outside 1..1048576"},
      {with_world("18446744073709551615"),
       "groups JSON: \"world_size\" 18446744073709551615 is outside 1..1048576"},
      {with_tp("{}"), "groups JSON: \"tp\" must be a list of groups, got object"},
      {with_tp("[0, 1]"), "groups JSON: \"tp\" group 0 must be a list of ranks, got number"},
      {with_tp("[[0, 1], [2, \"3\"]]"),
       "groups JSON: \"tp\" group 1 holds \"3\", which is not an integer rank"},
      {with_tp("[[0, 1], [2, 3.0]]"),
       "groups JSON: \"tp\" group 1 holds 3.0, which is not an integer rank"},
      {with_tp("[[0, true], [2, 3]]"),
       "groups JSON: \"tp\" group 0 holds true, which is not an integer rank"},
      {with_tp("[[0, null], [2, 3]]"),
       "groups JSON: \"tp\" group 0 holds null, which is not an integer rank"},
      {with_tp("[[0, [1]], [2, 3]]"),
       "groups JSON: \"tp\" group 0 holds an array, which is not an integer rank"},
      {with_tp("[[0, 1], [2, 4]]"),
       "groups JSON: \"tp\" group 1 holds rank 4, outside 0..3 (world_size 4)"},
      {with_tp("[[-1, 1], [2, 3]]"),
       "groups JSON: \"tp\" group 0 holds rank -1, outside 0..3 (world_size 4)"},
      {with_tp("[[0, 1], [2, 18446744073709551615]]"),
       "groups JSON: \"tp\" group 1 holds rank 18446744073709551615, outside 0..3 (world_size 4)"},
      {with_tp("[[0, 1], [2, -9223372036854775808]]"),
       "groups JSON: \"tp\" group 1 holds rank -9223372036854775808, outside 0..3 (world_size 4)"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    Error error = explicit_error(c.text);
    CHECK(error.code() == Errc::malformed);
    CHECK(std::string(error.what()) == c.message);
  }

  // Deep nesting neither crashes nor floods the message.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  Error error = explicit_error(with_tp("[[0, " + deep + "]]"));
  CHECK(error.code() == Errc::malformed);
  CHECK(std::string(error.what()) ==
        "groups JSON: \"tp\" group 0 holds an array, which is not an integer rank");
}

TEST_CASE("explicit: group lists that break a rule are errors naming the offending group") {
  auto singles = [](int world) {
    std::string out = "[";
    for (int rank = 0; rank < world; ++rank)
      out += (rank ? ", [" : "[") + std::to_string(rank) + "]";
    return out + "]";
  };
  struct Case {
    std::string text;
    std::string message;
  };
  const Case cases[] = {
      {groups_json(8, "[[0, 1, 2, 7], [4, 5, 6, 3]]", singles(8), singles(8),
                   "[[0, 4], [1, 5], [2, 7], [6, 3]]", singles(8), "[[0, 1, 2, 7], [4, 5, 6, 3]]"),
       "pp group 2 [2, 7] intersects tp group 0 [0, 1, 2, 7] in 2 ranks (2, 7); a TP and a PP "
       "group may share at most one rank"},
      {groups_json(8, "[[0, 1], [2, 3], [4, 5], [6, 7]]", singles(8), singles(8), singles(8),
                   "[[0], [1], [2], [3], [4], [6], [7]]", "[[0, 1], [2, 3], [4, 5], [6, 7]]"),
       "rank 5 is in no dp group"},
      {groups_json(4, "[[0], [1], [2], [3]]", singles(4), singles(4), singles(4),
                   "[[3], [1], [3], [0]]", singles(4)),
       "rank 3 is in dp groups 0 and 2"},
      {groups_json(7, "[[0, 1, 2, 3], [4, 5, 6]]", singles(7), singles(7), singles(7), singles(7),
                   "[[0, 1, 2, 3], [4, 5, 6]]"),
       "tp group 1 has 3 ranks, group 0 has 4"},
      {groups_json(8, "[[0, 1, 2, 4], [3, 5, 6, 7]]", "[[0, 1], [2, 3], [4, 5], [6, 7]]",
                   singles(8), singles(8), singles(8), "[[0, 1, 2, 4], [3, 5, 6, 7]]"),
       "dcp group 1 [2, 3] is not inside one tp group"},
      {groups_json(8, "[[0, 1], [2, 3], [4, 5], [6, 7]]", singles(8), singles(8), singles(8),
                   "[[0, 4], [2, 6], [1, 5], [3, 7]]", "[[0, 1, 2, 4], [3, 5, 6, 7]]"),
       "tp group 1 [2, 3] is not inside one ep group"},
      {groups_json(4, "[]", singles(4), singles(4), singles(4), singles(4), "[[0, 1], [2, 3]]"),
       "rank 0 is in no tp group"},
      // Every rule of check() holds, but no vLLM configuration has these sizes.
      {groups_json(2, "[[0, 1]]", singles(2), singles(2), singles(2), "[[0, 1]]", "[[0, 1]]"),
       "world size 2 is not divisible by dp*pp*pcp*tp = 2*1*1*2 = 4"},
      {groups_json(4, "[[0, 1], [2, 3]]", singles(4), singles(4), singles(4), singles(4),
                   "[[0, 1, 2, 3]]"),
       "ep groups have 4 ranks; dp*pcp*tp = 1*1*2 = 2"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    Error error = explicit_error(c.text);
    CHECK(error.code() == Errc::invalid_config);
    CHECK(std::string(error.what()) == c.message);
  }
}

TEST_CASE("implied_config reads the sizes off the groups") {
  Layout layout = contiguous_layout(config_of(32, 4, 2, 2, 2, 1));
  ParallelConfig implied = implied_config(layout);
  CHECK(implied == config_of(32, 4, 2, 2, 2, 1));
  CHECK(implied.external_dp() == 2);
  CHECK(implied.ep() == layout.size(GroupKind::ep));
}
