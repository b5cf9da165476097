#include "rankmesh/placement.hpp"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

// Explicit group files are read whole and indexed per rank; a bound keeps a one-line file from
// claiming a world that would take gigabytes to index.
constexpr std::int64_t kMaxExplicitWorld = std::int64_t{1} << 20;

// The kinds an explicit file lists, in to_json's order. The world kind is implied by world_size.
constexpr GroupKind kListedKinds[] = {GroupKind::tp, GroupKind::dcp, GroupKind::pcp,
                                     GroupKind::pp, GroupKind::dp,  GroupKind::ep};

std::size_t index(GroupKind kind) { return static_cast<std::size_t>(kind); }

// Checks the geometry against an already validated configuration.
void validate_geometry(const ParallelConfig& config, const SupernodeGeometry& geometry) {
  const int devices = geometry.devices_per_node;
  const int nodes = geometry.tp_nodes;
  if (devices < 1)
    throw Error(Errc::invalid_config,
                "devices per node must be at least 1, got " + std::to_string(devices));
  if (nodes < 1)
    throw Error(Errc::invalid_config,
                "tp nodes must be at least 1, got " + std::to_string(nodes));
  if (config.tp % nodes != 0)
    throw Error(Errc::invalid_config,
                "supernode placement: tp " + std::to_string(config.tp) +
                    " is not divisible by tp nodes " + std::to_string(nodes) +
                    " (a TP group takes the same number of devices from each of its nodes)");
  const int per_node = config.tp / nodes;
  if (devices % per_node != 0)
    throw Error(Errc::invalid_config,
                "supernode placement: devices per node " + std::to_string(devices) +
                    " is not divisible by tp/tp_nodes = " + std::to_string(config.tp) + "/" +
                    std::to_string(nodes) + " = " + std::to_string(per_node) +
                    " (the devices one TP group takes from a node)");
  const std::int64_t span = std::int64_t{nodes} * devices;
  if (config.world_size % span != 0)
    throw Error(Errc::invalid_config,
                "supernode placement: world size " + std::to_string(config.world_size) +
                    " is not divisible by tp_nodes*devices_per_node = " + std::to_string(nodes) +
                    "*" + std::to_string(devices) + " = " + std::to_string(span));
}

// The supernode rule for a validated configuration and geometry.
int physical_rank(const ParallelConfig& config, const SupernodeGeometry& geometry, int logical) {
  const int devices = geometry.devices_per_node;
  const int nodes = geometry.tp_nodes;
  const int per_node = config.tp / nodes;         // s: devices a TP group takes from one node
  const int groups_per_span = devices / per_node;  // m: TP groups sharing one set of k nodes
  const int g = logical / config.tp;
  const int t = logical % config.tp;
  const int node = (g / groups_per_span) * nodes + t / per_node;
  const int device = (g % groups_per_span) * per_node + t % per_node;
  return node * devices + device;
}

std::string type_name(const nlohmann::json& value) { return value.type_name(); }

// A value as a message shows it: short scalars as written, anything else by its type, so that
// a huge or deeply nested value never reaches dump().
std::string shown(const nlohmann::json& value) {
  if (!value.is_primitive()) return "an " + type_name(value);
  std::string text = value.dump();
  return text.size() <= 40 ? text : "a long " + type_name(value);
}

Error malformed(const std::string& message) {
  return Error(Errc::malformed, "groups JSON: " + message);
}

// One kind's group lists, with every entry an int in [0, world).
GroupList read_groups(const nlohmann::json& object, const char* key, int world) {
  auto found = object.find(key);
  if (found == object.end()) throw malformed("missing \"" + std::string(key) + "\"");
  const nlohmann::json& lists = *found;
  if (!lists.is_array())
    throw malformed("\"" + std::string(key) + "\" must be a list of groups, got " +
                    type_name(lists));
  GroupList groups;
  groups.reserve(lists.size());
  for (std::size_t g = 0; g < lists.size(); ++g) {
    const nlohmann::json& members = lists[g];
    const std::string where = "\"" + std::string(key) + "\" group " + std::to_string(g);
    if (!members.is_array())
      throw malformed(where + " must be a list of ranks, got " + type_name(members));
    Group group;
    group.reserve(members.size());
    for (const nlohmann::json& member : members) {
      if (!member.is_number_integer())
        throw malformed(where + " holds " + shown(member) + ", which is not an integer rank");
      // Unsigned first: a value above INT64_MAX would not survive a signed read.
      bool in_range = member.is_number_unsigned()
                          ? member.get<std::uint64_t>() < static_cast<std::uint64_t>(world)
                          : member.get<std::int64_t>() >= 0 && member.get<std::int64_t>() < world;
      if (!in_range)
        throw malformed(where + " holds rank " + member.dump() + ", outside 0.." +
                        std::to_string(world - 1) + " (world_size " + std::to_string(world) + ")");
      group.push_back(member.get<int>());
    }
    groups.push_back(std::move(group));
  }
  return groups;
}

int read_world_size(const nlohmann::json& object) {
  auto found = object.find("world_size");
  if (found == object.end()) throw malformed("missing \"world_size\"");
  const nlohmann::json& value = *found;
  if (!value.is_number_integer())
    throw malformed("\"world_size\" must be an integer, got " + shown(value));
  bool in_range =
      value.is_number_unsigned()
          ? value.get<std::uint64_t>() >= 1 &&
                value.get<std::uint64_t>() <= std::uint64_t{kMaxExplicitWorld}
          : value.get<std::int64_t>() >= 1 && value.get<std::int64_t>() <= kMaxExplicitWorld;
  if (!in_range)
    throw malformed("\"world_size\" " + value.dump() + " is outside 1.." +
                    std::to_string(kMaxExplicitWorld));
  return value.get<int>();
}

Layout parse_explicit(std::string_view json_text) {
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(json_text.begin(), json_text.end());
  } catch (const nlohmann::json::parse_error& error) {
    // what() leads with "[json.exception.parse_error.101] "; the rest is the useful part.
    std::string what = error.what();
    if (auto end = what.find("] "); what.starts_with("[json.exception") && end != std::string::npos)
      what.erase(0, end + 2);
    throw malformed(what);
  }
  if (!document.is_object())
    throw malformed("expected an object with \"world_size\", \"tp\", \"dcp\", \"pcp\", \"pp\", "
                    "\"dp\" and \"ep\", got " + type_name(document));
  for (const auto& [key, value] : document.items()) {
    bool known = key == "world_size";
    for (GroupKind kind : kListedKinds) known = known || key == to_string(kind);
    if (!known)
      throw malformed("unknown key \"" + key +
                      "\"; expected world_size, tp, dcp, pcp, pp, dp and ep");
  }

  const int world = read_world_size(document);
  std::array<GroupList, kGroupKindCount> groups;
  for (GroupKind kind : kListedKinds)
    groups[index(kind)] = read_groups(document, to_string(kind), world);
  Group everyone(static_cast<std::size_t>(world));
  std::iota(everyone.begin(), everyone.end(), 0);
  groups[index(GroupKind::world)] = GroupList{std::move(everyone)};
  return Layout(world, std::move(groups));
}

void append_groups(std::string& out, const GroupList& groups) {
  out += '[';
  for (std::size_t g = 0; g < groups.size(); ++g) {
    if (g) out += ", ";
    out += '[';
    for (std::size_t i = 0; i < groups[g].size(); ++i) {
      if (i) out += ", ";
      out += std::to_string(groups[g][i]);
    }
    out += ']';
  }
  out += ']';
}

}  // namespace

const char* to_string(PlacementKind kind) noexcept {
  switch (kind) {
    case PlacementKind::contiguous: return "contiguous";
    case PlacementKind::supernode: return "supernode";
    case PlacementKind::explicit_groups: return "explicit";
  }
  return "unknown";
}

PlacementKind placement_kind_from_string(std::string_view text) {
  for (PlacementKind kind :
       {PlacementKind::contiguous, PlacementKind::supernode, PlacementKind::explicit_groups})
    if (text == to_string(kind)) return kind;
  throw Error(Errc::invalid_argument, "unknown placement '" + std::string(text) +
                                          "'; expected contiguous, supernode or explicit");
}

int supernode_physical_rank(const ParallelConfig& config, const SupernodeGeometry& geometry,
                            int logical_rank) {
  config.validate();
  validate_geometry(config, geometry);
  if (logical_rank < 0 || logical_rank >= config.world_size)
    throw Error(Errc::invalid_argument, "logical rank " + std::to_string(logical_rank) +
                                            " is outside the world of " +
                                            std::to_string(config.world_size) + " ranks");
  return physical_rank(config, geometry, logical_rank);
}

Layout supernode_layout(const ParallelConfig& config, const SupernodeGeometry& geometry) {
  config.validate();
  validate_geometry(config, geometry);
  Layout logical = contiguous_layout(config);
  std::vector<int> physical(static_cast<std::size_t>(config.world_size));
  for (int rank = 0; rank < config.world_size; ++rank)
    physical[static_cast<std::size_t>(rank)] = physical_rank(config, geometry, rank);
  std::array<GroupList, kGroupKindCount> groups;
  for (GroupKind kind : kAllGroupKinds) {
    GroupList mapped = logical.groups(kind);
    // The world group stays in global-rank order, as vLLM's is: its rank_in_group is the
    // process's global rank, which a placement does not rename.
    if (kind != GroupKind::world) {
      for (Group& group : mapped)
        for (int& rank : group) rank = physical[static_cast<std::size_t>(rank)];
      // Members keep their logical order (it defines rank-in-group and next/prev); the groups
      // are listed in ascending order of their first member, as the vendor table lists them
      // (its DP singletons run 0, 1, ..., 15). A kind partitions the world, so first members
      // are distinct and the order is total.
      std::ranges::sort(mapped, {}, [](const Group& group) { return group.front(); });
    }
    groups[index(kind)] = std::move(mapped);
  }
  Layout layout(config.world_size, std::move(groups));
  layout.check();
  return layout;
}

Layout explicit_layout(std::string_view json_text) {
  Layout layout = [&] {
    // Nothing below should throw a nlohmann exception once the schema checks pass; this keeps
    // any that slips through from escaping as something other than an Error.
    try {
      return parse_explicit(json_text);
    } catch (const nlohmann::json::exception& error) {
      throw malformed(error.what());
    }
  }();
  layout.check();
  // The group sizes must also be a configuration vLLM could have laid out, so that the sizes
  // they imply (external DP among them) mean something.
  ParallelConfig implied = implied_config(layout);
  implied.validate();
  if (layout.size(GroupKind::ep) != implied.ep())
    throw Error(Errc::invalid_config,
                "ep groups have " + std::to_string(layout.size(GroupKind::ep)) +
                    " ranks; dp*pcp*tp = " + std::to_string(implied.dp) + "*" +
                    std::to_string(implied.pcp) + "*" + std::to_string(implied.tp) + " = " +
                    std::to_string(implied.ep()));
  return layout;
}

ParallelConfig implied_config(const Layout& layout) {
  ParallelConfig config;
  config.world_size = layout.world_size();
  config.tp = layout.size(GroupKind::tp);
  config.pp = layout.size(GroupKind::pp);
  config.dp = layout.size(GroupKind::dp);
  config.dcp = layout.size(GroupKind::dcp);
  config.pcp = layout.size(GroupKind::pcp);
  return config;
}

std::string to_json(const Layout& layout) {
  std::string out = "{\"world_size\": " + std::to_string(layout.world_size());
  for (GroupKind kind : kListedKinds) {
    out += ", \"";
    out += to_string(kind);
    out += "\": ";
    append_groups(out, layout.groups(kind));
  }
  out += '}';
  return out;
}

}  // namespace rankmesh
