// What a ParallelState holds; shared by runtime.cpp (which builds it) and parallel_state.cpp.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <caf/all.hpp>

#include "coordinator/group_state.hpp"
#include "rank_context.hpp"
#include "rankmesh/parallel_state.hpp"

namespace rankmesh {

struct ParallelState::Impl {
  caf::actor_system& system;
  caf::actor rank_actor;
  std::shared_ptr<RankContext> context;
  int data_parallel_size;
  std::chrono::milliseconds timeout;
  std::function<void(const std::string&)> log;

  std::optional<Layout> layout;  // set by initialize_model_parallel
  ParallelConfig config;
  PlacementSpec placement;
  std::unique_ptr<GroupCoordinator> world;
  std::array<std::unique_ptr<GroupCoordinator>, kGroupKindCount> groups;  // by GroupKind
};

}  // namespace rankmesh
