#include "collectives/send_allgather.hpp"

#include "collectives/collectives.hpp"

namespace rankmesh {

std::string dotted_key(const std::vector<std::string>& path) {
  std::string key;
  for (const auto& part : path) {
    if (!key.empty()) key += '.';
    key += part;
  }
  return key;
}

std::optional<bool> forced_slicing(const AllGatherTensors& overrides, const std::string& key) {
  if (auto it = overrides.find(key); it != overrides.end()) return it->second;
  return std::nullopt;
}

bool may_slice(const GroupState* all_gather_group, const AllGatherTensors& overrides,
               const std::string& key, std::int64_t numel) {
  if (all_gather_group == nullptr || all_gather_group->size() == 1 || numel == 0) return false;
  const std::optional<bool> rule = forced_slicing(overrides, key);
  return rule ? *rule : numel % all_gather_group->size() == 0;
}

bool links_leave_node(const Call& call, GroupState* all_gather_group, int to) {
  if (all_gather_group == nullptr || all_gather_group->size() == 1) return false;
  RankContext& rank = call.rank();
  for (int member : all_gather_group->members)
    if (!rank.same_node(member)) return false;
  auto& known = call.group().links_leave_node;
  const auto key = std::make_pair(all_gather_group->id, to);
  if (auto it = known.find(key); it != known.end()) return it->second;
  Tensor leaves = rank.allocate(Shape{1}, DType::i32);
  *leaves.data_as<std::int32_t>() = rank.same_node(call.group().global_rank(to)) ? 0 : 1;
  const Tensor any = collectives::all_reduce(*all_gather_group, leaves, ReduceOp::max);
  const bool leave = *any.data_as<std::int32_t>() != 0;
  known.emplace(key, leave);
  return leave;
}

}  // namespace rankmesh
