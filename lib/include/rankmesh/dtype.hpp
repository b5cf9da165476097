// Element types of tensors, with their sizes and names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace rankmesh {

// The numeric value of each enumerator is its wire code in the metadata codec: append only.
enum class DType : std::uint8_t {
  f32, f16, bf16, f64, i8, i16, i32, i64, u8, boolean, fp8_e4m3, fp8_e5m2,
};
inline constexpr std::size_t kDTypeCount = 12;

// Bytes per element. Inline: every message asks it per tensor.
constexpr std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::f64:
    case DType::i64: return 8;
    case DType::f32:
    case DType::i32: return 4;
    case DType::f16:
    case DType::bf16:
    case DType::i16: return 2;
    case DType::i8:
    case DType::u8:
    case DType::boolean:
    case DType::fp8_e4m3:
    case DType::fp8_e5m2: return 1;
  }
  return 1;
}
const char* to_string(DType dtype) noexcept;      // "float32", "bfloat16", "float8_e4m3fn", ...
std::optional<DType> dtype_from_string(std::string_view name) noexcept;
std::optional<DType> dtype_from_code(std::uint64_t code) noexcept;

}  // namespace rankmesh
