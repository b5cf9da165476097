#include "rank/group_ids.hpp"

#include <string>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {
// A group id: kind in the top 4 bits, then 12 bits of layout epoch, then the group's index.
constexpr int kEpochShift = 16;
constexpr std::uint32_t kEpochMask = 0xFFF;
constexpr std::uint32_t kMaxGroupIndex = (std::uint32_t{1} << kEpochShift) - 1;

std::uint32_t epoch_of(std::uint32_t group) { return (group >> kEpochShift) & kEpochMask; }

// Epoch 0 is the world group's; layouts count 1, 2, ... and wrap past 0.
std::uint32_t epoch_after(std::uint32_t epoch) {
  const std::uint32_t next = (epoch + 1) & kEpochMask;
  return next == 0 ? 1 : next;
}
}  // namespace

std::uint32_t group_id(GroupKind kind, int index, std::uint32_t epoch) {
  if (index < 0 || static_cast<std::uint32_t>(index) > kMaxGroupIndex)
    throw Error(Errc::invalid_config, "group index " + std::to_string(index) + " of kind " +
                                          to_string(kind) + " is beyond the " +
                                          std::to_string(kMaxGroupIndex + 1) +
                                          " groups of a kind that frames can name");
  return (static_cast<std::uint32_t>(kind) << 28) | ((epoch & kEpochMask) << kEpochShift) |
         static_cast<std::uint32_t>(index);
}

std::uint32_t LayoutEpochs::begin() noexcept {
  const std::uint32_t next = epoch_after(current());
  current_.store(next, std::memory_order_release);
  return next;
}

bool LayoutEpochs::stale(std::uint32_t group) const noexcept {
  // initialize_model_parallel agrees across ranks before any rank builds its groups, so a peer
  // is at most one epoch ahead: its frames for the next epoch wait; older ones have no receiver.
  const std::uint32_t epoch = epoch_of(group);
  const std::uint32_t now = current();
  return epoch != 0 && epoch != now && epoch != epoch_after(now);
}

}  // namespace rankmesh
