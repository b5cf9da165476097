#include "rankmesh/layout.hpp"

#include <cstdint>
#include <string>
#include <utility>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

// Messages name groups by their members; a group of thousands of ranks would drown the point.
std::string format_group(const Group& group) {
  constexpr std::size_t kShown = 16;
  std::string out = "[";
  for (std::size_t i = 0; i < group.size() && i < kShown; ++i) {
    if (i) out += ", ";
    out += std::to_string(group[i]);
  }
  if (group.size() > kShown) out += ", ... (" + std::to_string(group.size()) + " ranks)";
  return out + "]";
}

std::string describe(GroupKind kind, std::size_t index, const Group& group) {
  return std::string(to_string(kind)) + " group " + std::to_string(index) + " " +
         format_group(group);
}

// The five axes of vLLM's `arange(world).reshape(-1, dp, pp, pcp, tp)`, outermost first.
enum Axis : int { kExternalDp, kDp, kPp, kPcp, kTp, kAxisCount };
using Shape = std::array<int, kAxisCount>;
using AxisOrder = std::array<int, kAxisCount>;
constexpr AxisOrder kRowMajor{kExternalDp, kDp, kPp, kPcp, kTp};

// `all_ranks.permute(order).reshape(-1, group_size)`: visit the 5-D index space with the axes
// in `order` (last varies fastest), read each rank at its original position, and cut the visit
// sequence into groups. Every vLLM expression is a transpose followed by such a reshape.
GroupList enumerate_groups(const Shape& shape, const AxisOrder& order, int group_size) {
  int world = 1;
  for (int extent : shape) world *= extent;
  Shape stride{};
  stride[kAxisCount - 1] = 1;
  for (int axis = kAxisCount - 2; axis >= 0; --axis)
    stride[axis] = stride[axis + 1] * shape[axis + 1];

  GroupList groups;
  groups.reserve(static_cast<std::size_t>(world / group_size));
  Shape index{};
  for (int visited = 0; visited < world; ++visited) {
    if (visited % group_size == 0) {
      groups.emplace_back();
      groups.back().reserve(static_cast<std::size_t>(group_size));
    }
    int rank = 0;
    for (int axis = 0; axis < kAxisCount; ++axis) rank += index[axis] * stride[axis];
    groups.back().push_back(rank);
    // Odometer step over the permuted axes, the last in `order` fastest.
    for (int position = kAxisCount - 1; position >= 0; --position) {
      int axis = order[position];
      if (++index[axis] < shape[axis]) break;
      index[axis] = 0;
    }
  }
  return groups;
}

}  // namespace

const char* to_string(GroupKind kind) noexcept {
  switch (kind) {
    case GroupKind::world: return "world";
    case GroupKind::tp: return "tp";
    case GroupKind::dcp: return "dcp";
    case GroupKind::pcp: return "pcp";
    case GroupKind::pp: return "pp";
    case GroupKind::dp: return "dp";
    case GroupKind::ep: return "ep";
  }
  return "unknown";
}

GroupKind group_kind_from_string(std::string_view text) {
  for (GroupKind kind : kAllGroupKinds)
    if (text == to_string(kind)) return kind;
  throw Error(Errc::invalid_argument, "unknown group kind '" + std::string(text) +
                                          "'; expected world, tp, dcp, pcp, pp, dp or ep");
}

void ParallelConfig::validate() const {
  const std::pair<const char*, int> sizes[] = {{"world size", world_size}, {"tp", tp}, {"pp", pp},
                                               {"dp", dp}, {"dcp", dcp}, {"pcp", pcp}};
  for (const auto& [name, value] : sizes)
    if (value < 1)
      throw Error(Errc::invalid_config,
                  std::string(name) + " must be at least 1, got " + std::to_string(value));
  // Multiplied step by step in 64 bits so that no int overflows: once the running product
  // passes the world size it cannot divide it, and its exact value no longer matters.
  const int factor[] = {dp, pp, pcp, tp};
  std::int64_t product = 1;
  for (int i = 0; i < 4; ++i) {
    product *= factor[i];
    const bool complete = i == 3;
    if (product <= world_size && (!complete || world_size % product == 0)) continue;
    throw Error(
        Errc::invalid_config,
        "world size " + std::to_string(world_size) +
            " is not divisible by dp*pp*pcp*tp = " + std::to_string(dp) + "*" + std::to_string(pp) +
            "*" + std::to_string(pcp) + "*" + std::to_string(tp) +
            (complete ? " = " + std::to_string(product) : ", which is more than the world size"));
  }
  if (tp % dcp != 0)
    throw Error(Errc::invalid_config, "dcp " + std::to_string(dcp) + " does not divide tp " +
                                          std::to_string(tp) +
                                          " (each DCP group is a block of one TP group)");
}

int ParallelConfig::size_of(GroupKind kind) const {
  switch (kind) {
    case GroupKind::world: return world_size;
    case GroupKind::tp: return tp;
    case GroupKind::dcp: return dcp;
    case GroupKind::pcp: return pcp;
    case GroupKind::pp: return pp;
    case GroupKind::dp: return dp;
    case GroupKind::ep: return ep();
  }
  return 0;
}

Layout::Layout(int world_size, std::array<GroupList, kGroupKindCount> groups)
    : world_size_(world_size), groups_(std::move(groups)) {
  index_ranks();
}

// Tolerates lists that do not partition the world (check() reports those): a rank keeps its
// first occurrence, out-of-range members are skipped, and an uncovered rank stays at group -1.
void Layout::index_ranks() {
  const std::size_t world = world_size_ > 0 ? static_cast<std::size_t>(world_size_) : 0;
  for (std::size_t k = 0; k < kGroupKindCount; ++k) {
    std::vector<Coordinate>& at = coordinates_[k];
    at.assign(world, Coordinate{-1, -1});
    const GroupList& groups = groups_[k];
    for (std::size_t g = 0; g < groups.size(); ++g) {
      for (std::size_t i = 0; i < groups[g].size(); ++i) {
        int rank = groups[g][i];
        if (rank < 0 || rank >= world_size_ || at[static_cast<std::size_t>(rank)].group >= 0)
          continue;
        at[static_cast<std::size_t>(rank)] = Coordinate{static_cast<int>(g), static_cast<int>(i)};
      }
    }
  }
}

int Layout::size(GroupKind kind) const {
  const GroupList& groups = groups_[index(kind)];
  return groups.empty() ? 0 : static_cast<int>(groups.front().size());
}

Coordinate Layout::coordinate(GroupKind kind, int rank) const {
  if (rank < 0 || rank >= world_size_)
    throw Error(Errc::invalid_argument, "rank " + std::to_string(rank) +
                                            " is outside the world of " +
                                            std::to_string(world_size_) + " ranks");
  Coordinate at = coordinates_[index(kind)][static_cast<std::size_t>(rank)];
  if (at.group < 0)
    throw Error(Errc::invalid_argument,
                "rank " + std::to_string(rank) + " is in no " + to_string(kind) + " group");
  return at;
}

int Layout::rank_at(GroupKind kind, Coordinate coordinate) const {
  const GroupList& groups = groups_[index(kind)];
  if (coordinate.group < 0 || static_cast<std::size_t>(coordinate.group) >= groups.size())
    throw Error(Errc::invalid_argument,
                std::string(to_string(kind)) + " group " + std::to_string(coordinate.group) +
                    " does not exist; there are " + std::to_string(groups.size()));
  const Group& group = groups[static_cast<std::size_t>(coordinate.group)];
  if (coordinate.rank_in_group < 0 ||
      static_cast<std::size_t>(coordinate.rank_in_group) >= group.size())
    throw Error(Errc::invalid_argument,
                "rank in group " + std::to_string(coordinate.rank_in_group) + " is outside " +
                    describe(kind, static_cast<std::size_t>(coordinate.group), group) + " of " +
                    std::to_string(group.size()) + " ranks");
  return group[static_cast<std::size_t>(coordinate.rank_in_group)];
}

const Group& Layout::group_of(GroupKind kind, int rank) const {
  return groups_[index(kind)][static_cast<std::size_t>(coordinate(kind, rank).group)];
}

void Layout::check() const {
  if (world_size_ < 1)
    throw Error(Errc::invalid_config,
                "world size must be at least 1, got " + std::to_string(world_size_));

  // Partition and uniform size, kind by kind. Once these hold, coordinates_ is exact: every
  // rank was seen once, so its first occurrence is its only one.
  for (GroupKind kind : kAllGroupKinds) {
    const GroupList& groups = groups_[index(kind)];
    const char* name = to_string(kind);
    std::vector<int> seen_in(static_cast<std::size_t>(world_size_), -1);
    for (std::size_t g = 0; g < groups.size(); ++g) {
      const Group& group = groups[g];
      if (group.size() != groups.front().size())
        throw Error(Errc::invalid_config,
                    std::string(name) + " group " + std::to_string(g) + " has " +
                        std::to_string(group.size()) + " ranks, group 0 has " +
                        std::to_string(groups.front().size()));
      for (int rank : group) {
        if (rank < 0 || rank >= world_size_)
          throw Error(Errc::invalid_config, describe(kind, g, group) + " holds rank " +
                                                std::to_string(rank) + ", outside the world of " +
                                                std::to_string(world_size_) + " ranks");
        int& first = seen_in[static_cast<std::size_t>(rank)];
        if (first == static_cast<int>(g))
          throw Error(Errc::invalid_config, describe(kind, g, group) + " holds rank " +
                                                std::to_string(rank) + " twice");
        if (first >= 0)
          throw Error(Errc::invalid_config, "rank " + std::to_string(rank) + " is in " + name +
                                                " groups " + std::to_string(first) + " and " +
                                                std::to_string(g));
        first = static_cast<int>(g);
      }
    }
    for (int rank = 0; rank < world_size_; ++rank)
      if (seen_in[static_cast<std::size_t>(rank)] < 0)
        throw Error(Errc::invalid_config,
                    "rank " + std::to_string(rank) + " is in no " + name + " group");
  }
  if (groups(GroupKind::world).size() != 1)
    throw Error(Errc::invalid_config,
                "the world kind has " + std::to_string(groups(GroupKind::world).size()) +
                    " groups; it must be one group of all " + std::to_string(world_size_) +
                    " ranks");

  // `inner` groups must each lie inside one `outer` group: all members share the outer group of
  // the first.
  auto check_nested = [this](GroupKind inner, GroupKind outer) {
    const GroupList& inner_groups = groups(inner);
    const auto& outer_of = coordinates_[index(outer)];
    for (std::size_t g = 0; g < inner_groups.size(); ++g) {
      int home = outer_of[static_cast<std::size_t>(inner_groups[g].front())].group;
      for (int rank : inner_groups[g])
        if (outer_of[static_cast<std::size_t>(rank)].group != home)
          throw Error(Errc::invalid_config, describe(inner, g, inner_groups[g]) +
                                                " is not inside one " + to_string(outer) +
                                                " group");
    }
  };
  check_nested(GroupKind::dcp, GroupKind::tp);
  check_nested(GroupKind::tp, GroupKind::ep);

  // A TP group and a PP group meet in at most one rank: a TP group's ranks serve one pipeline
  // stage, a PP group's ranks serve different stages, so no two ranks can share both.
  const GroupList& pp_groups = groups(GroupKind::pp);
  const GroupList& tp_groups = groups(GroupKind::tp);
  const auto& tp_of = coordinates_[index(GroupKind::tp)];
  // visited_by[t] == p marks TP group t as already met by PP group p: linear in the world.
  std::vector<std::size_t> visited_by(tp_groups.size(), pp_groups.size());
  for (std::size_t p = 0; p < pp_groups.size(); ++p) {
    std::size_t worst_tp = tp_groups.size();
    for (int rank : pp_groups[p]) {
      auto t = static_cast<std::size_t>(tp_of[static_cast<std::size_t>(rank)].group);
      if (visited_by[t] == p && t < worst_tp) worst_tp = t;
      visited_by[t] = p;
    }
    if (worst_tp == tp_groups.size()) continue;
    const Group& tp_group = tp_groups[worst_tp];
    std::string shared;
    std::size_t count = 0;
    for (int rank : pp_groups[p])
      if (static_cast<std::size_t>(tp_of[static_cast<std::size_t>(rank)].group) == worst_tp)
        shared += (count++ ? ", " : "") + std::to_string(rank);
    throw Error(Errc::invalid_config, describe(GroupKind::pp, p, pp_groups[p]) + " intersects " +
                                          describe(GroupKind::tp, worst_tp, tp_group) + " in " +
                                          std::to_string(count) + " ranks (" + shared +
                                          "); a TP and a PP group may share at most one rank");
  }
}

Layout contiguous_layout(const ParallelConfig& config) {
  config.validate();
  const Shape shape{config.external_dp(), config.dp, config.pp, config.pcp, config.tp};
  // all_ranks.transpose(a, b): row-major order with axes a and b swapped.
  auto swapped = [](int a, int b) {
    AxisOrder order = kRowMajor;
    std::swap(order[static_cast<std::size_t>(a)], order[static_cast<std::size_t>(b)]);
    return order;
  };
  std::array<GroupList, kGroupKindCount> groups;
  auto at = [&](GroupKind kind) -> GroupList& { return groups[static_cast<std::size_t>(kind)]; };
  at(GroupKind::world) = enumerate_groups(shape, kRowMajor, config.world_size);
  at(GroupKind::tp) = enumerate_groups(shape, kRowMajor, config.tp);
  at(GroupKind::dcp) = enumerate_groups(shape, kRowMajor, config.dcp);
  at(GroupKind::pcp) = enumerate_groups(shape, swapped(kPcp, kTp), config.pcp);
  at(GroupKind::pp) = enumerate_groups(shape, swapped(kPp, kTp), config.pp);
  at(GroupKind::dp) = enumerate_groups(shape, swapped(kDp, kTp), config.dp);
  at(GroupKind::ep) = enumerate_groups(shape, swapped(kDp, kPp), config.ep());
  Layout layout(config.world_size, std::move(groups));
  layout.check();
  return layout;
}

}  // namespace rankmesh
