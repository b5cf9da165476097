// Placements: how logical ranks of the contiguous layout land on physical ranks.
#pragma once

#include <string>
#include <string_view>

#include "rankmesh/layout.hpp"

namespace rankmesh {

enum class PlacementKind { contiguous, supernode, explicit_groups };

const char* to_string(PlacementKind kind) noexcept;
// "contiguous", "supernode", "explicit"; throws Error(invalid_argument) otherwise.
PlacementKind placement_kind_from_string(std::string_view text);

// Supernode geometry: every TP group takes tp/tp_nodes consecutive devices from each of
// tp_nodes nodes of devices_per_node devices.
struct SupernodeGeometry {
  int devices_per_node = 8;
  int tp_nodes = 2;
  bool operator==(const SupernodeGeometry&) const = default;
};

// Physical rank of a logical (contiguous-layout) rank under the supernode rule; throws
// Error(invalid_config) naming the numbers when the geometry does not fit the configuration.
int supernode_physical_rank(const ParallelConfig& config, const SupernodeGeometry& geometry,
                            int logical_rank);

// The contiguous layout with every rank mapped through the supernode permutation; each kind's
// groups (but the world's) then listed in ascending order of their first member, members
// keeping their logical order.
Layout supernode_layout(const ParallelConfig& config, const SupernodeGeometry& geometry);

// Group lists from JSON text in `rankmesh layout --json`'s schema, validated (Layout::check()).
// Throws Error(malformed) for JSON that is not that schema, Error(invalid_config) naming the
// offending group otherwise.
Layout explicit_layout(std::string_view json_text);

// The sizes a layout implies (tp, pp, dp, dcp, pcp from its group sizes).
ParallelConfig implied_config(const Layout& layout);

// `{"world_size": N, "tp": [[...], ...], "dcp": ..., "pcp": ..., "pp": ..., "dp": ..., "ep": ...}`
std::string to_json(const Layout& layout);

}  // namespace rankmesh
