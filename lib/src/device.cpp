#include "rankmesh/device.hpp"

#include <array>

namespace rankmesh {
namespace {

// Indexed by wire code.
constexpr std::array<const char*, kDeviceTypeCount> kDeviceTypeNames{"cpu", "cuda", "npu", "xpu"};

static_assert(static_cast<std::size_t>(DeviceType::xpu) + 1 == kDeviceTypeCount);

}  // namespace

const char* to_string(DeviceType type) noexcept {
  return kDeviceTypeNames[static_cast<std::size_t>(type)];
}

std::optional<DeviceType> device_type_from_code(std::uint64_t code) noexcept {
  if (code >= kDeviceTypeCount) return std::nullopt;
  return static_cast<DeviceType>(code);
}

std::string to_string(const Device& device) {
  return std::string(to_string(device.type)) + ":" + std::to_string(device.index);
}

}  // namespace rankmesh
