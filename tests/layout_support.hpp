// Helpers the layout and placement tests share.
#pragma once

#include <functional>
#include <initializer_list>
#include <optional>
#include <vector>

#include "rankmesh/error.hpp"
#include "rankmesh/layout.hpp"

namespace rankmesh::test {

// The Error that `action` throws; nothing when it throws none.
inline std::optional<Error> error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error;
  }
  return std::nullopt;
}

inline ParallelConfig config_of(int world, int tp, int pp = 1, int dp = 1, int dcp = 1, int pcp = 1) {
  ParallelConfig config;
  config.world_size = world;
  config.tp = tp;
  config.pp = pp;
  config.dp = dp;
  config.dcp = dcp;
  config.pcp = pcp;
  return config;
}

inline GroupList singletons(std::initializer_list<int> ranks) {
  GroupList groups;
  for (int rank : ranks) groups.push_back({rank});
  return groups;
}

inline Group iota(int count) {
  Group group;
  for (int rank = 0; rank < count; ++rank) group.push_back(rank);
  return group;
}

inline std::vector<int> divisors(int n) {
  std::vector<int> out;
  for (int d = 1; d <= n; ++d)
    if (n % d == 0) out.push_back(d);
  return out;
}

// Every configuration with a layout: dp*pp*pcp*tp divides the world, dcp divides tp.
inline std::vector<ParallelConfig> all_valid_configs(int max_world) {
  std::vector<ParallelConfig> out;
  for (int world = 1; world <= max_world; ++world)
    for (int tp : divisors(world))
      for (int pp : divisors(world / tp))
        for (int dp : divisors(world / tp / pp))
          for (int pcp : divisors(world / tp / pp / dp))
            for (int dcp : divisors(tp)) out.push_back(config_of(world, tp, pp, dp, dcp, pcp));
  return out;
}

}  // namespace rankmesh::test
