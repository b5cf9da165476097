// The mesh layout: which global ranks form each parallel group, with vLLM's semantics.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rankmesh {

// Group kinds, in the order rankmesh prints them.
enum class GroupKind : std::uint8_t { world, tp, dcp, pcp, pp, dp, ep };
inline constexpr std::size_t kGroupKindCount = 7;
inline constexpr std::array<GroupKind, kGroupKindCount> kAllGroupKinds = {
    GroupKind::world, GroupKind::tp, GroupKind::dcp, GroupKind::pcp,
    GroupKind::pp,    GroupKind::dp, GroupKind::ep};

const char* to_string(GroupKind kind) noexcept;
// Parses "world", "tp", ...; throws Error(invalid_argument) naming the text otherwise.
GroupKind group_kind_from_string(std::string_view text);

// Sizes of a parallel configuration. External DP is what is left of the world:
// world_size / (dp * pp * pcp * tp).
struct ParallelConfig {
  int world_size = 1;
  int tp = 1;
  int pp = 1;
  int dp = 1;
  int dcp = 1;  // decode context parallel: sub-blocks of each TP group
  int pcp = 1;  // prefill context parallel

  // Throws Error(invalid_config) naming the numbers when no layout exists.
  void validate() const;
  int external_dp() const { return world_size / (dp * pp * pcp * tp); }
  int ep() const { return dp * pcp * tp; }
  int size_of(GroupKind kind) const;

  bool operator==(const ParallelConfig&) const = default;
};

using Group = std::vector<int>;           // global ranks, in group-rank order (never sorted)
using GroupList = std::vector<Group>;     // groups of one kind, in enumeration order

// Where a rank sits in one kind: which group and its index inside it.
struct Coordinate {
  int group = 0;
  int rank_in_group = 0;
  bool operator==(const Coordinate&) const = default;
};

// The groups of every kind over one world. Built by a placement (placement.hpp).
class Layout {
public:
  // Takes the group lists as they are; `check()` validates them (placements call it).
  Layout(int world_size, std::array<GroupList, kGroupKindCount> groups);

  int world_size() const { return world_size_; }
  const GroupList& groups(GroupKind kind) const { return groups_[index(kind)]; }
  // Group size of a kind (uniform within a kind).
  int size(GroupKind kind) const;

  // A rank's coordinate in a kind, and back. Throw Error(invalid_argument) when out of range.
  Coordinate coordinate(GroupKind kind, int rank) const;
  int rank_at(GroupKind kind, Coordinate coordinate) const;
  const Group& group_of(GroupKind kind, int rank) const;

  // Throws Error(invalid_config) naming the offending group unless: every kind partitions the
  // world, sizes are uniform within a kind, each DCP group lies inside a TP group, each TP group
  // inside an EP group, and a TP group and a PP group share at most one rank.
  void check() const;

  bool operator==(const Layout& other) const {
    return world_size_ == other.world_size_ && groups_ == other.groups_;
  }

private:
  static std::size_t index(GroupKind kind) { return static_cast<std::size_t>(kind); }
  void index_ranks();

  int world_size_;
  std::array<GroupList, kGroupKindCount> groups_;
  // coordinates_[kind][rank]; filled by index_ranks() when the lists partition the world.
  std::array<std::vector<Coordinate>, kGroupKindCount> coordinates_;
};

// vLLM's contiguous layout: ranks laid out as ExternalDP x DP x PP x PCP x TP.
Layout contiguous_layout(const ParallelConfig& config);

}  // namespace rankmesh
