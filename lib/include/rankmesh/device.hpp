// Where tensor memory lives: a device type and an index.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace rankmesh {

// The numeric value of each enumerator is its wire code in the metadata codec: append only.
enum class DeviceType : std::uint8_t { cpu, cuda, npu, xpu };
inline constexpr std::size_t kDeviceTypeCount = 4;

const char* to_string(DeviceType type) noexcept;  // "cpu", "cuda", "npu", "xpu"
std::optional<DeviceType> device_type_from_code(std::uint64_t code) noexcept;

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;
  bool operator==(const Device&) const = default;
};

std::string to_string(const Device& device);  // "cpu:0", "cuda:3"

}  // namespace rankmesh
