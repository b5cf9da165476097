// `rankmesh layout`: the groups of a configuration, as a table or as JSON.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include "arguments.hpp"
#include "commands.hpp"
#include "rankmesh/layout.hpp"
#include "rankmesh/placement.hpp"

namespace rankmesh::tool {
namespace {

constexpr const char* kHelp =
    "usage: rankmesh layout --world-size N --tp T [--pp P] [--dp D] [--dcp C] [--pcp K]\n"
    "                       [--placement contiguous|supernode] [--devices-per-node G]\n"
    "                       [--tp-nodes S] [--groups FILE] [--json]\n"
    "Prints each rank's coordinates and the tp, dcp, pcp, pp, dp and ep groups (vLLM's layout).\n"
    "--groups FILE reads explicit group lists in the --json schema and validates them.\n";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("cannot read --groups file '" + path + "'");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string format_group(const Group& group) {
  std::string out = "[";
  for (std::size_t i = 0; i < group.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(group[i]);
  }
  return out + "]";
}

void print_table(const Layout& layout, PlacementKind placement) {
  ParallelConfig c = implied_config(layout);
  std::printf("world %d: tp %d, pp %d, dp %d, dcp %d, pcp %d, external dp %d, ep %d; placement %s\n",
              c.world_size, c.tp, c.pp, c.dp, c.dcp, c.pcp, c.external_dp(), c.ep(),
              to_string(placement));
  std::printf("\neach cell is group/rank-in-group\n%6s", "rank");
  for (GroupKind kind : kAllGroupKinds)
    if (kind != GroupKind::world) std::printf("%9s", to_string(kind));
  std::printf("\n");
  for (int rank = 0; rank < layout.world_size(); ++rank) {
    std::printf("%6d", rank);
    for (GroupKind kind : kAllGroupKinds) {
      if (kind == GroupKind::world) continue;
      Coordinate at = layout.coordinate(kind, rank);
      std::string cell = std::to_string(at.group) + "/" + std::to_string(at.rank_in_group);
      std::printf("%9s", cell.c_str());
    }
    std::printf("\n");
  }
  for (GroupKind kind : kAllGroupKinds) {
    if (kind == GroupKind::world) continue;
    const GroupList& groups = layout.groups(kind);
    std::printf("\n%s: %zu groups of %d\n", to_string(kind), groups.size(), layout.size(kind));
    for (std::size_t g = 0; g < groups.size(); ++g)
      std::printf("  %s:%zu %s\n", to_string(kind), g, format_group(groups[g]).c_str());
  }
}

// With --groups, any size also given on the command line must match the file.
void check_agrees(const Arguments& args, const Layout& layout) {
  ParallelConfig implied = implied_config(layout);
  const std::pair<const char*, int> sizes[] = {
      {"--world-size", implied.world_size}, {"--tp", implied.tp},   {"--pp", implied.pp},
      {"--dp", implied.dp},                 {"--dcp", implied.dcp}, {"--pcp", implied.pcp}};
  for (const auto& [flag, value] : sizes) {
    if (auto given = args.positive(flag); given && *given != value)
      throw UsageError(std::string(flag) + " " + std::to_string(*given) +
                       " disagrees with the --groups file, which has " + std::to_string(value));
  }
}

}  // namespace

int layout_command(const std::vector<std::string>& argv) {
  if (argv.size() == 1 && (argv[0] == "--help" || argv[0] == "-h")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  Arguments args(argv,
                 {"--world-size", "--tp", "--pp", "--dp", "--dcp", "--pcp", "--placement",
                  "--devices-per-node", "--tp-nodes", "--groups"},
                 {"--json"});

  PlacementKind placement = PlacementKind::contiguous;
  if (auto name = args.text("--placement")) placement = placement_kind_from_string(*name);
  if (args.has("--groups")) {
    if (args.has("--placement") && placement != PlacementKind::explicit_groups)
      throw UsageError("--groups implies --placement explicit, got --placement " + *args.text("--placement"));
    placement = PlacementKind::explicit_groups;
  } else if (placement == PlacementKind::explicit_groups) {
    throw UsageError("--placement explicit needs --groups FILE");
  }
  if (placement != PlacementKind::supernode &&
      (args.has("--devices-per-node") || args.has("--tp-nodes")))
    throw UsageError("--devices-per-node and --tp-nodes apply only to --placement supernode");

  Layout layout = [&] {
    if (placement == PlacementKind::explicit_groups) {
      Layout explicit_groups = explicit_layout(read_file(*args.text("--groups")));
      check_agrees(args, explicit_groups);
      return explicit_groups;
    }
    ParallelConfig config;
    auto world = args.positive("--world-size");
    auto tp = args.positive("--tp");
    if (!world) throw UsageError("--world-size is required");
    if (!tp) throw UsageError("--tp is required");
    config.world_size = *world;
    config.tp = *tp;
    config.pp = args.positive("--pp").value_or(1);
    config.dp = args.positive("--dp").value_or(1);
    config.dcp = args.positive("--dcp").value_or(1);
    config.pcp = args.positive("--pcp").value_or(1);
    if (placement == PlacementKind::contiguous) return contiguous_layout(config);
    SupernodeGeometry geometry;
    geometry.devices_per_node = args.positive("--devices-per-node").value_or(geometry.devices_per_node);
    geometry.tp_nodes = args.positive("--tp-nodes").value_or(geometry.tp_nodes);
    return supernode_layout(config, geometry);
  }();

  if (args.has("--json")) {
    std::printf("%s\n", to_json(layout).c_str());
  } else {
    print_table(layout, placement);
  }
  return 0;
}

}  // namespace rankmesh::tool
