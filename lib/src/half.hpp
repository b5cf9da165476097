// IEEE binary16 (float16) and bfloat16 conversions to and from float32, on raw 16-bit patterns.
//
// Widening is exact. Narrowing rounds to nearest, ties to even, with subnormals, overflow to
// infinity and NaN handled; a NaN stays a NaN of the same sign (signalling NaNs come back quiet,
// as hardware converters do). Both assume the default rounding mode, as all float arithmetic
// here does; flush-to-zero modes do not change the results.
//
// Branch-free (every case is computed, then one is selected with bit masks) because a loop
// over an array vectorises only then: a conditional float operation could trap, so compilers
// will not turn a branch around one into a select.
#pragma once

#include <bit>
#include <cstdint>

namespace rankmesh {
namespace detail {

// c ? a : b, as bit operations that compilers keep branch-free. (Callers compare magnitudes
// as signed integers, which is what SIMD units without unsigned compares do directly.)
constexpr std::uint32_t select_bits(bool c, std::uint32_t a, std::uint32_t b) noexcept {
  const std::uint32_t mask = 0u - static_cast<std::uint32_t>(c);
  return (a & mask) | (b & ~mask);
}

}  // namespace detail

constexpr float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t magnitude = h & 0x7fffu;  // exponent and mantissa
  // Normal: move the 10 mantissa bits up to float's 23 and rebias the exponent (15 -> 127).
  const std::uint32_t normal = (magnitude << 13) + ((127u - 15u) << 23);
  // Infinity or NaN: all-ones exponent, mantissa (and so any NaN payload) kept.
  const std::uint32_t inf_nan = (magnitude << 13) | 0x7f800000u;
  // Subnormal (and zero): the value is mantissa * 2^-24, exact (and normal) in float.
  const std::uint32_t subnormal = std::bit_cast<std::uint32_t>(
      static_cast<float>(static_cast<std::int32_t>(magnitude)) * 0x1p-24f);
  const auto m = static_cast<std::int32_t>(magnitude);
  const std::uint32_t bits = detail::select_bits(
      m >= 0x7c00, inf_nan, detail::select_bits(m >= 0x0400, normal, subnormal));
  return std::bit_cast<float>(sign | bits);
}

constexpr std::uint16_t f32_to_f16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t magnitude = x & 0x7fffffffu;

  // Quiet NaN keeping the top of the payload.
  const std::uint32_t nan = 0x7e00u | ((magnitude >> 13) & 0x03ffu);

  // Normal result: rebias the exponent (127 -> 15) and round off 13 mantissa bits to nearest
  // even; a carry out of the mantissa correctly bumps the exponent. Wraps harmlessly for
  // inputs of the other branches, whose result is not selected.
  const std::uint32_t rebased = magnitude - ((127u - 15u) << 23);
  const std::uint32_t normal = (rebased + 0x0fffu + ((rebased >> 13) & 1u)) >> 13;

  // Subnormal result (|f| < 2^-14): adding 0.5 puts the float's ulp at 2^-24, the float16
  // subnormal step, so the hardware rounds to nearest even and the low mantissa bits are the
  // result (0x400 when it rounds up to the smallest normal).
  const std::uint32_t subnormal =
      std::bit_cast<std::uint32_t>(std::bit_cast<float>(magnitude) + 0.5f) - 0x3f000000u;

  // 0x477ff000 is 65520, halfway between 65504 (largest float16) and 65536: ties go to the
  // even neighbour, which is infinity.
  const auto m = static_cast<std::int32_t>(magnitude);
  const std::uint32_t bits = detail::select_bits(
      m > 0x7f800000, nan,
      detail::select_bits(m >= 0x477ff000, 0x7c00u,
                          detail::select_bits(m >= 0x38800000, normal, subnormal)));
  return static_cast<std::uint16_t>(sign | bits);
}

constexpr float bf16_to_f32(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

constexpr std::uint16_t f32_to_bf16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  // bfloat16 is float32's top half, so rounding off the low 16 bits to nearest even covers
  // subnormals and overflow to infinity alike.
  const std::uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  // NaNs take their own path: rounding could carry the payload into infinity or the sign.
  const std::uint32_t nan = (x >> 16) | 0x0040u;
  return static_cast<std::uint16_t>(
      detail::select_bits((x & 0x7fffffffu) > 0x7f800000u, nan, rounded));
}

}  // namespace rankmesh
