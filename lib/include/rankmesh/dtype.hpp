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

namespace detail {
// Bytes per element, by wire code. At namespace scope: a table local to dtype_size() would be
// built on the stack at every call (C++20 allows no static in a constexpr function).
inline constexpr std::uint8_t kDTypeSizes[kDTypeCount] = {
    4,  // f32
    2,  // f16
    2,  // bf16
    8,  // f64
    1,  // i8
    2,  // i16
    4,  // i32
    8,  // i64
    1,  // u8
    1,  // boolean
    1,  // fp8_e4m3
    1,  // fp8_e5m2
};
}  // namespace detail

// Bytes per element. Inline and a table: every message asks it per tensor, and a DType only
// ever holds a known code (dtype_from_code() checks what arrives).
constexpr std::size_t dtype_size(DType dtype) noexcept {
  const auto code = static_cast<std::size_t>(dtype);
  return code < kDTypeCount ? detail::kDTypeSizes[code] : 1;
}
const char* to_string(DType dtype) noexcept;      // "float32", "bfloat16", "float8_e4m3fn", ...
std::optional<DType> dtype_from_string(std::string_view name) noexcept;
std::optional<DType> dtype_from_code(std::uint64_t code) noexcept;

}  // namespace rankmesh
