// Group ids and layout epochs. A frame names its group by an id: the kind, the group's index
// among its kind, and the layout epoch it belongs to, so that a group rebuilt by a later
// initialize_model_parallel never takes a frame meant for its predecessor. The world group
// lives in epoch 0 for the runtime's life.
#pragma once

#include <atomic>
#include <cstdint>

#include "rankmesh/layout.hpp"

namespace rankmesh {

std::uint32_t group_id(GroupKind kind, int index, std::uint32_t epoch);

class LayoutEpochs {
public:
  // Starts the next layout epoch (initialize_model_parallel, on every rank alike): frames of
  // the epoch before, stashed or late, are dropped from now on. Returns the new epoch.
  std::uint32_t begin() noexcept;
  std::uint32_t current() const noexcept { return current_.load(std::memory_order_acquire); }
  // Whether a frame of `group` belongs to a layout epoch that is over: nobody will receive it.
  bool stale(std::uint32_t group) const noexcept;

private:
  std::atomic<std::uint32_t> current_{0};
};

}  // namespace rankmesh
