#include "rankmesh/dtype.hpp"

#include <array>

namespace rankmesh {
namespace {

struct DTypeInfo {
  const char* name;
  std::size_t size;
};

// Indexed by wire code; names follow torch so that engines can map them one to one.
constexpr std::array<DTypeInfo, kDTypeCount> kDTypes{{
    {"float32", 4},
    {"float16", 2},
    {"bfloat16", 2},
    {"float64", 8},
    {"int8", 1},
    {"int16", 2},
    {"int32", 4},
    {"int64", 8},
    {"uint8", 1},
    {"bool", 1},
    {"float8_e4m3fn", 1},
    {"float8_e5m2", 1},
}};

static_assert(static_cast<std::size_t>(DType::fp8_e5m2) + 1 == kDTypeCount);

// dtype_size() is inline in the header; the table says the same.
constexpr bool sizes_agree() {
  for (std::size_t code = 0; code < kDTypeCount; ++code)
    if (dtype_size(static_cast<DType>(code)) != kDTypes[code].size) return false;
  return true;
}
static_assert(sizes_agree());

}  // namespace

const char* to_string(DType dtype) noexcept {
  return kDTypes[static_cast<std::size_t>(dtype)].name;
}

std::optional<DType> dtype_from_string(std::string_view name) noexcept {
  for (std::size_t code = 0; code < kDTypeCount; ++code) {
    if (name == kDTypes[code].name) return static_cast<DType>(code);
  }
  return std::nullopt;
}

std::optional<DType> dtype_from_code(std::uint64_t code) noexcept {
  if (code >= kDTypeCount) return std::nullopt;
  return static_cast<DType>(code);
}

}  // namespace rankmesh
