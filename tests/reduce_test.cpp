#include "reduce.hpp"

#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "rankmesh/error.hpp"
#include "half.hpp"

using namespace rankmesh;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Same value, or both NaN; +0 and -0 are told apart.
template <class F>
bool same(F a, F b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

template <class F>
bool same(const std::vector<F>& a, const std::vector<F>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!same(a[i], b[i])) return false;
  }
  return true;
}

template <class T>
std::vector<T> reduce(const std::vector<std::vector<T>>& inputs, DType dtype, ReduceOp op) {
  std::vector<const void*> pointers;
  for (const auto& input : inputs) pointers.push_back(input.data());
  std::vector<T> out(inputs.at(0).size(), T{});
  reduce_many(pointers, out.data(), out.size(), dtype, op);
  return out;
}

// Reduces float16 or bfloat16 given as floats (each exactly representable) and widens the result.
std::vector<float> reduce_half(const std::vector<std::vector<float>>& inputs, DType dtype,
                               ReduceOp op) {
  const bool f16 = dtype == DType::f16;
  std::vector<std::vector<std::uint16_t>> encoded;
  for (const auto& input : inputs) {
    auto& bits = encoded.emplace_back();
    for (float v : input) {
      bits.push_back(f16 ? f32_to_f16(v) : f32_to_bf16(v));
      REQUIRE(same(f16 ? f16_to_f32(bits.back()) : bf16_to_f32(bits.back()), v));
    }
  }
  std::vector<float> out;
  for (std::uint16_t b : reduce(encoded, dtype, op))
    out.push_back(f16 ? f16_to_f32(b) : bf16_to_f32(b));
  return out;
}

std::uint32_t bits_of(float f) {
  return std::bit_cast<std::uint32_t>(f);
}

}  // namespace

TEST_CASE("ReduceOp names") {
  CHECK(std::string(to_string(ReduceOp::sum)) == "sum");
  CHECK(std::string(to_string(ReduceOp::max)) == "max");
  CHECK(std::string(to_string(ReduceOp::min)) == "min");
}

TEST_CASE("float8 and bool are refused with an error naming the dtype and op") {
  for (DType dtype : {DType::boolean, DType::fp8_e4m3, DType::fp8_e5m2}) {
    CHECK_FALSE(is_reducible(dtype));
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::min}) {
      CAPTURE(to_string(dtype));
      CAPTURE(to_string(op));
      try {
        check_reducible(dtype, op);
        FAIL("check_reducible accepted a dtype without reductions");
      } catch (const Error& e) {
        CHECK(e.code() == Errc::invalid_argument);
        const std::string message = e.what();
        CHECK(message.find(std::string("cannot reduce ") + to_string(dtype)) != std::string::npos);
        CHECK(message.find(to_string(op)) != std::string::npos);
      }
      // reduce_many refuses too, before looking at anything else (even with nothing to reduce).
      std::uint8_t a[2] = {1, 2};
      const void* inputs[] = {a, a};
      CHECK_THROWS_AS(reduce_many(inputs, a, 2, dtype, op), Error);
      CHECK_THROWS_AS(reduce_many(inputs, a, 0, dtype, op), Error);
      CHECK(a[0] == 1);
    }
  }
  try {
    check_reducible(DType::fp8_e4m3, ReduceOp::sum);
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("sum cannot reduce float8_e4m3fn") != std::string::npos);
  }
}

TEST_CASE("every other dtype is reducible") {
  for (DType dtype : {DType::f32, DType::f16, DType::bf16, DType::f64, DType::i8, DType::i16,
                      DType::i32, DType::i64, DType::u8}) {
    CHECK(is_reducible(dtype));
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::min}) {
      CHECK_NOTHROW(check_reducible(dtype, op));
    }
  }
  CHECK_THROWS_AS(check_reducible(DType::f32, static_cast<ReduceOp>(7)), Error);
  CHECK_THROWS_AS(check_reducible(static_cast<DType>(200), ReduceOp::sum), Error);
}

TEST_CASE("bad arguments are errors") {
  float a[1] = {1.0f};
  SUBCASE("no inputs") {
    CHECK_THROWS_AS(reduce_many({}, a, 1, DType::f32, ReduceOp::sum), Error);
  }
  SUBCASE("a null input") {
    const void* inputs[] = {a, nullptr};
    CHECK_THROWS_WITH_AS(reduce_many(inputs, a, 1, DType::f32, ReduceOp::sum),
                         "sum of float32: input 1 of 2 is a null pointer", Error);
  }
  SUBCASE("a null output") {
    const void* inputs[] = {a, a};
    CHECK_THROWS_AS(reduce_many(inputs, nullptr, 1, DType::f32, ReduceOp::sum), Error);
  }
}

TEST_CASE("count 0 reads and writes nothing") {
  const void* null_inputs[] = {nullptr, nullptr};
  CHECK_NOTHROW(reduce_many(null_inputs, nullptr, 0, DType::f32, ReduceOp::sum));
  float a[2] = {1.0f, 2.0f};
  float out[2] = {7.0f, 7.0f};
  const void* inputs[] = {a, a};
  reduce_many(inputs, out, 0, DType::f32, ReduceOp::sum);
  CHECK(out[0] == 7.0f);
  CHECK(out[1] == 7.0f);
}

TEST_CASE("float32 table") {
  const std::vector<std::vector<float>> in = {
      {1.5f, -2.0f, 0.0f, -0.0f, kInf, 3.0f, kNaN, 1.0f, -0.0f},
      {2.25f, 4.0f, -0.0f, -0.0f, 1.0f, -kInf, 1.0f, kNaN, 0.0f},
      {-1.0f, 0.5f, 0.0f, -0.0f, 2.0f, 1.0f, 2.0f, 3.0f, -0.0f},
  };
  CHECK(same(reduce(in, DType::f32, ReduceOp::sum),
             {2.75f, 2.5f, 0.0f, -0.0f, kInf, -kInf, kNaN, kNaN, 0.0f}));
  // max/min: NaN propagates from any position; -0 < +0.
  CHECK(same(reduce(in, DType::f32, ReduceOp::max),
             {2.25f, 4.0f, 0.0f, -0.0f, kInf, 3.0f, kNaN, kNaN, 0.0f}));
  CHECK(same(reduce(in, DType::f32, ReduceOp::min),
             {-1.0f, -2.0f, -0.0f, -0.0f, 1.0f, -kInf, kNaN, kNaN, -0.0f}));
}

TEST_CASE("float64 table") {
  constexpr double inf = std::numeric_limits<double>::infinity();
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<std::vector<double>> in = {
      {1e308, 0.1, 0.0, 5.0, nan, -0.0},
      {1e308, 0.2, -0.0, -inf, 1.0, 0.0},
  };
  CHECK(same(reduce(in, DType::f64, ReduceOp::sum), {inf, 0.1 + 0.2, 0.0, -inf, nan, 0.0}));
  CHECK(same(reduce(in, DType::f64, ReduceOp::max), {1e308, 0.2, 0.0, 5.0, nan, 0.0}));
  CHECK(same(reduce(in, DType::f64, ReduceOp::min), {1e308, 0.1, -0.0, -inf, nan, -0.0}));
}

TEST_CASE("float16 and bfloat16 tables") {
  for (DType dtype : {DType::f16, DType::bf16}) {
    CAPTURE(to_string(dtype));
    const std::vector<std::vector<float>> in = {
        {1.5f, -2.0f, 0.0f, kInf, kNaN, -0.0f},
        {0.25f, 4.0f, -0.0f, 1.0f, 1.0f, 0.0f},
        {-0.5f, 0.5f, -0.0f, 2.0f, 2.0f, -0.0f},
    };
    CHECK(same(reduce_half(in, dtype, ReduceOp::sum), {1.25f, 2.5f, 0.0f, kInf, kNaN, 0.0f}));
    CHECK(same(reduce_half(in, dtype, ReduceOp::max), {1.5f, 4.0f, 0.0f, kInf, kNaN, 0.0f}));
    CHECK(same(reduce_half(in, dtype, ReduceOp::min), {-0.5f, -2.0f, -0.0f, 1.0f, kNaN, -0.0f}));
  }
}

TEST_CASE("integer tables: sum wraps around") {
  SUBCASE("int8") {
    const std::vector<std::vector<std::int8_t>> in = {
        {100, -128, 5, 127}, {100, -1, -7, 0}, {1, 0, 2, -128}};
    CHECK(reduce(in, DType::i8, ReduceOp::sum) == std::vector<std::int8_t>{-55, 127, 0, -1});
    CHECK(reduce(in, DType::i8, ReduceOp::max) == std::vector<std::int8_t>{100, 0, 5, 127});
    CHECK(reduce(in, DType::i8, ReduceOp::min) == std::vector<std::int8_t>{1, -128, -7, -128});
  }
  SUBCASE("int16") {
    const std::vector<std::vector<std::int16_t>> in = {{32767, -32768, 3}, {1, -1, -4}};
    CHECK(reduce(in, DType::i16, ReduceOp::sum) == std::vector<std::int16_t>{-32768, 32767, -1});
    CHECK(reduce(in, DType::i16, ReduceOp::max) == std::vector<std::int16_t>{32767, -1, 3});
    CHECK(reduce(in, DType::i16, ReduceOp::min) == std::vector<std::int16_t>{1, -32768, -4});
  }
  SUBCASE("int32") {
    constexpr std::int32_t lo = std::numeric_limits<std::int32_t>::min();
    constexpr std::int32_t hi = std::numeric_limits<std::int32_t>::max();
    const std::vector<std::vector<std::int32_t>> in = {{hi, lo, 10}, {1, -1, -20}, {0, 0, 5}};
    CHECK(reduce(in, DType::i32, ReduceOp::sum) == std::vector<std::int32_t>{lo, hi, -5});
    CHECK(reduce(in, DType::i32, ReduceOp::max) == std::vector<std::int32_t>{hi, 0, 10});
    CHECK(reduce(in, DType::i32, ReduceOp::min) == std::vector<std::int32_t>{0, lo, -20});
  }
  SUBCASE("int64") {
    constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min();
    constexpr std::int64_t hi = std::numeric_limits<std::int64_t>::max();
    const std::vector<std::vector<std::int64_t>> in = {{hi, lo, 1LL << 40}, {1, -1, -(1LL << 41)}};
    CHECK(reduce(in, DType::i64, ReduceOp::sum) == std::vector<std::int64_t>{lo, hi, -(1LL << 40)});
    CHECK(reduce(in, DType::i64, ReduceOp::max) == std::vector<std::int64_t>{hi, -1, 1LL << 40});
    CHECK(reduce(in, DType::i64, ReduceOp::min) == std::vector<std::int64_t>{1, lo, -(1LL << 41)});
  }
  SUBCASE("uint8") {
    const std::vector<std::vector<std::uint8_t>> in = {{200, 0, 7}, {100, 255, 9}, {0, 2, 8}};
    CHECK(reduce(in, DType::u8, ReduceOp::sum) == std::vector<std::uint8_t>{44, 1, 24});
    CHECK(reduce(in, DType::u8, ReduceOp::max) == std::vector<std::uint8_t>{200, 255, 9});
    CHECK(reduce(in, DType::u8, ReduceOp::min) == std::vector<std::uint8_t>{0, 0, 7});
  }
}

TEST_CASE("float sums add the inputs in the given order") {
  // In float32, (1e8 + -1e8) + 1 == 1 but 1e8 + (-1e8 + 1) == 0: the ulp at 1e8 is 8.
  const float a = 1e8f, b = -1e8f, c = 1.0f;
  REQUIRE((a + b) + c != a + (b + c));
  CHECK(reduce<float>({{a}, {b}, {c}}, DType::f32, ReduceOp::sum)[0] == 1.0f);
  CHECK(reduce<float>({{c}, {a}, {b}}, DType::f32, ReduceOp::sum)[0] == 0.0f);
  CHECK(reduce<double>({{1e17}, {-1e17}, {1.0}}, DType::f64, ReduceOp::sum)[0] == 1.0);
  CHECK(reduce<double>({{1.0}, {1e17}, {-1e17}}, DType::f64, ReduceOp::sum)[0] == 0.0);
}

TEST_CASE("float16 and bfloat16 accumulate in float32 and round once") {
  SUBCASE("float16: 2048 + 1 + 1") {
    // Rounding after every step gives 2048 (2049 ties to even, twice); float32 gives 2050.
    CHECK(f16_to_f32(f32_to_f16(2048.0f + 1.0f)) == 2048.0f);
    CHECK(reduce_half({{2048.0f}, {1.0f}, {1.0f}}, DType::f16, ReduceOp::sum)[0] == 2050.0f);
  }
  SUBCASE("float16: an intermediate beyond the float16 range") {
    // 60000 + 60000 is infinity in float16, but fine in float32.
    CHECK(reduce_half({{60000.0f}, {60000.0f}, {-60000.0f}}, DType::f16, ReduceOp::sum)[0] ==
          f16_to_f32(f32_to_f16(60000.0f)));
  }
  SUBCASE("bfloat16: 256 + 1 + 1") {
    CHECK(bf16_to_f32(f32_to_bf16(256.0f + 1.0f)) == 256.0f);
    CHECK(reduce_half({{256.0f}, {1.0f}, {1.0f}}, DType::bf16, ReduceOp::sum)[0] == 258.0f);
  }
}

TEST_CASE("the output may alias an input") {
  // Long enough for several blocks of every element type and a partial one.
  constexpr std::size_t n = 9001;
  std::vector<float> a(n), b(n), c(n);
  for (std::size_t i = 0; i < n; ++i) {
    a[i] = static_cast<float>(i) * 0.5f;
    b[i] = 1.0f;
    c[i] = -static_cast<float>(i);
  }
  const std::vector<float> expected = reduce<float>({a, b, c}, DType::f32, ReduceOp::sum);
  SUBCASE("out == inputs[0]") {
    const void* inputs[] = {a.data(), b.data(), c.data()};
    reduce_many(inputs, a.data(), n, DType::f32, ReduceOp::sum);
    CHECK(a == expected);
  }
  SUBCASE("out == a later input") {
    const void* inputs[] = {a.data(), b.data(), c.data()};
    reduce_many(inputs, c.data(), n, DType::f32, ReduceOp::sum);
    CHECK(c == expected);
  }
  SUBCASE("float16 in place") {
    std::vector<std::uint16_t> x(n), y(n);
    for (std::size_t i = 0; i < n; ++i) {
      x[i] = f32_to_f16(static_cast<float>(i % 100));
      y[i] = f32_to_f16(0.25f);
    }
    const void* inputs[] = {x.data(), y.data()};
    reduce_many(inputs, x.data(), n, DType::f16, ReduceOp::sum);
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (f16_to_f32(x[i]) != static_cast<float>(i % 100) + 0.25f) ++mismatches;
    }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("a single input is copied") {
  const std::vector<std::int32_t> a = {1, -2, 3};
  CHECK(reduce<std::int32_t>({a}, DType::i32, ReduceOp::max) == a);
}

namespace {

// A scalar, one-rank reference: fold the inputs left to right, element by element.
template <class Acc>
Acc reference_op(Acc a, Acc b, ReduceOp op) {
  if constexpr (std::is_floating_point_v<Acc>) {
    if (op == ReduceOp::sum) return a + b;
    if (std::isnan(a)) return a;
    if (std::isnan(b)) return b;
    if (a == b) {  // only +0/-0 can differ
      const bool negative = op == ReduceOp::max ? std::signbit(a) && std::signbit(b)
                                                : std::signbit(a) || std::signbit(b);
      return negative ? -std::abs(a) : std::abs(a);
    }
    return op == ReduceOp::max ? std::max(a, b) : std::min(a, b);
  } else {
    if (op == ReduceOp::sum) {
      return static_cast<Acc>(static_cast<std::make_unsigned_t<Acc>>(a) +
                              static_cast<std::make_unsigned_t<Acc>>(b));
    }
    return op == ReduceOp::max ? std::max(a, b) : std::min(a, b);
  }
}

template <class Stored, class Acc, class Load, class Store, class Random>
void check_against_reference(DType dtype, Load load, Store store, Random random) {
  std::mt19937_64 rng(12345);
  for (std::size_t count :
       {std::size_t{1}, std::size_t{17}, std::size_t{4396}, std::size_t{9000}}) {
    for (std::size_t ranks : {1, 2, 3, 8}) {
      std::vector<std::vector<Stored>> inputs(ranks, std::vector<Stored>(count));
      for (auto& input : inputs) {
        for (auto& v : input) v = random(rng);
      }
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::min}) {
        CAPTURE(to_string(dtype));
        CAPTURE(to_string(op));
        CAPTURE(count);
        CAPTURE(ranks);
        const std::vector<Stored> got = reduce(inputs, dtype, op);
        bool all_same = true;
        for (std::size_t i = 0; i < count; ++i) {
          Acc acc = load(inputs[0][i]);
          for (std::size_t k = 1; k < ranks; ++k) acc = reference_op(acc, load(inputs[k][i]), op);
          const Stored want = store(acc);
          if constexpr (std::is_floating_point_v<Acc>) {
            all_same = all_same && same(load(got[i]), load(want));
          } else {
            all_same = all_same && got[i] == want;
          }
        }
        CHECK(all_same);
      }
    }
  }
}

template <class T>
T identity(T v) {
  return v;
}

}  // namespace

TEST_CASE("every dtype and op equals a scalar left-to-right reference") {
  // Floats drawn over many magnitudes, with some zeros of both signs, infinities and NaNs.
  auto random_float = [](std::mt19937_64& rng) {
    const std::uint64_t r = rng();
    switch (r % 64) {
      case 0: return 0.0f;
      case 1: return -0.0f;
      case 2: return kInf;
      case 3: return -kInf;
      case 4: return kNaN;
      default: {
        // In [-2, 2), scaled by 2^-20 .. 2^19.
        const float mantissa =
            static_cast<float>(static_cast<std::int64_t>(r >> 39) - (std::int64_t{1} << 24)) /
            8388608.0f;
        return std::ldexp(mantissa, static_cast<int>((r >> 8) % 40) - 20);
      }
    }
  };
  check_against_reference<float, float>(DType::f32, identity<float>, identity<float>, random_float);
  check_against_reference<double, double>(
      DType::f64, identity<double>, identity<double>,
      [&](std::mt19937_64& rng) { return static_cast<double>(random_float(rng)) / 3.0; });
  check_against_reference<std::uint16_t, float>(
      DType::f16, f16_to_f32, f32_to_f16,
      [](std::mt19937_64& rng) { return static_cast<std::uint16_t>(rng()); });
  check_against_reference<std::uint16_t, float>(
      DType::bf16, bf16_to_f32, f32_to_bf16,
      [](std::mt19937_64& rng) { return static_cast<std::uint16_t>(rng()); });
  auto random_int = [](auto zero) {
    return [](std::mt19937_64& rng) { return static_cast<decltype(zero)>(rng()); };
  };
  check_against_reference<std::int8_t, std::int8_t>(
      DType::i8, identity<std::int8_t>, identity<std::int8_t>, random_int(std::int8_t{}));
  check_against_reference<std::int16_t, std::int16_t>(
      DType::i16, identity<std::int16_t>, identity<std::int16_t>, random_int(std::int16_t{}));
  check_against_reference<std::int32_t, std::int32_t>(
      DType::i32, identity<std::int32_t>, identity<std::int32_t>, random_int(std::int32_t{}));
  check_against_reference<std::int64_t, std::int64_t>(
      DType::i64, identity<std::int64_t>, identity<std::int64_t>, random_int(std::int64_t{}));
  check_against_reference<std::uint8_t, std::uint8_t>(
      DType::u8, identity<std::uint8_t>, identity<std::uint8_t>, random_int(std::uint8_t{}));
}

// ---- Conversions ----

static_assert(f16_to_f32(0x3c00) == 1.0f);
static_assert(f32_to_f16(1.0f) == 0x3c00);
static_assert(bf16_to_f32(0x3f80) == 1.0f);
static_assert(f32_to_bf16(1.0f) == 0x3f80);

TEST_CASE("float16 known values") {
  CHECK(f16_to_f32(0x0000) == 0.0f);
  CHECK(std::signbit(f16_to_f32(0x8000)));
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));     // smallest subnormal
  CHECK(f16_to_f32(0x03ff) == std::ldexp(1023.0f, -24));  // largest subnormal
  CHECK(f16_to_f32(0x0400) == std::ldexp(1.0f, -14));     // smallest normal
  CHECK(f16_to_f32(0x7bff) == 65504.0f);
  CHECK(f16_to_f32(0x7c00) == kInf);
  CHECK(f16_to_f32(0xfc00) == -kInf);
  CHECK(f16_to_f32(0xc000) == -2.0f);
  CHECK(f16_to_f32(0x3555) == 0x1.554p-2f);

  CHECK(f32_to_f16(65519.0f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);  // the tie between 65504 and 65536 goes to infinity
  CHECK(f32_to_f16(1e10f) == 0x7c00);
  CHECK(f32_to_f16(-1e10f) == 0xfc00);
  CHECK(f32_to_f16(kInf) == 0x7c00);
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);  // tie between 0 and 2^-24: even is 0
  CHECK(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
  CHECK(f32_to_f16(std::ldexp(3.0f, -25)) == 0x0002);  // tie between 1 and 2 ulps: even is 2
  CHECK(f32_to_f16(1e-30f) == 0x0000);
  CHECK(f32_to_f16(-1e-30f) == 0x8000);
  CHECK(f32_to_f16(std::numeric_limits<float>::denorm_min()) == 0x0000);
  CHECK(f32_to_f16(std::ldexp(1023.5f, -24)) == 0x0400);  // rounds up into the normals
  const std::uint16_t nan = f32_to_f16(std::bit_cast<float>(0x7f800001u));  // payload only low
  CHECK((nan & 0x7c00) == 0x7c00);
  CHECK((nan & 0x03ff) != 0);
  CHECK(f32_to_f16(-kNaN) >= 0xfc01);
}

TEST_CASE("bfloat16 known values") {
  CHECK(bf16_to_f32(0x7f7f) == std::bit_cast<float>(0x7f7f0000u));
  CHECK(bf16_to_f32(0x7f80) == kInf);
  CHECK(bf16_to_f32(0x0001) == std::bit_cast<float>(0x00010000u));  // subnormal
  CHECK(f32_to_bf16(std::bit_cast<float>(0x7f7f8000u)) == 0x7f80);  // tie, odd -> infinity
  CHECK(f32_to_bf16(std::bit_cast<float>(0x7f7f7fffu)) == 0x7f7f);
  CHECK(f32_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);
  CHECK(f32_to_bf16(std::bit_cast<float>(0x00008000u)) == 0x0000);  // subnormal tie -> even
  CHECK(f32_to_bf16(std::bit_cast<float>(0x00018000u)) == 0x0002);
  // NaNs whose payload would round into infinity or carry into the sign stay NaNs.
  CHECK(f32_to_bf16(std::bit_cast<float>(0x7f800001u)) == 0x7fc0);
  CHECK(f32_to_bf16(std::bit_cast<float>(0x7fffffffu)) == 0x7fff);
  CHECK(f32_to_bf16(std::bit_cast<float>(0xffffffffu)) == 0xffff);
}

TEST_CASE("all 65536 float16 patterns widen exactly and round-trip") {
  int mismatches = 0;
  for (std::uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float f = f16_to_f32(bits);
    const std::uint32_t exponent = (h >> 10) & 0x1f;
    const std::uint32_t mantissa = h & 0x3ff;
    const bool negative = (h & 0x8000) != 0;
    if (exponent == 0x1f && mantissa != 0) {
      // NaN stays NaN, of the same sign, and comes back a NaN of that sign.
      const std::uint16_t back = f32_to_f16(f);
      if (!std::isnan(f) || std::signbit(f) != negative || (back & 0x7c00) != 0x7c00 ||
          (back & 0x03ff) == 0 || ((back & 0x8000) != 0) != negative) {
        ++mismatches;
      }
      continue;
    }
    // The value from the definition of binary16.
    const float magnitude = exponent == 0x1f ? kInf
                            : exponent == 0  ? std::ldexp(static_cast<float>(mantissa), -24)
                                             : std::ldexp(static_cast<float>(1024 + mantissa),
                                                          static_cast<int>(exponent) - 25);
    const float want = negative ? -magnitude : magnitude;
    if (bits_of(f) != bits_of(want) || f32_to_f16(f) != bits) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("all 65536 bfloat16 patterns round-trip") {
  int mismatches = 0;
  for (std::uint32_t b = 0; b <= 0xffff; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const float f = bf16_to_f32(bits);
    if (bits_of(f) != b << 16) ++mismatches;
    const std::uint16_t back = f32_to_bf16(f);
    if (std::isnan(f)) {
      if (!std::isnan(bf16_to_f32(back)) || (back & 0x8000) != (b & 0x8000)) ++mismatches;
    } else if (back != bits) {
      ++mismatches;
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("narrowing rounds to nearest, ties to even, between every pair of neighbours") {
  // For each pair of adjacent finite values lo < hi of the narrow type: the midpoint goes to
  // the even one, one float32 ulp either side goes to the nearer one. Both signs.
  auto check_pair = [](auto narrow, std::uint16_t lo_bits, float lo, float mid, int& mismatches) {
    const auto hi_bits = static_cast<std::uint16_t>(lo_bits + 1);
    const std::uint16_t even = (lo_bits & 1) ? hi_bits : lo_bits;
    for (float sign : {1.0f, -1.0f}) {
      const std::uint16_t s = sign < 0 ? 0x8000 : 0;
      if (narrow(sign * mid) != (even | s)) ++mismatches;
      if (narrow(sign * std::nextafter(mid, lo)) != (lo_bits | s)) ++mismatches;
      if (narrow(sign * std::nextafter(mid, kInf)) != (hi_bits | s)) ++mismatches;
    }
  };
  int mismatches = 0;
  for (std::uint16_t h = 0; h < 0x7c00; ++h) {
    const float lo = f16_to_f32(h);
    // float16 values have 11 significant bits, so the midpoint is exact in float32.
    const float hi = h == 0x7bff ? 65536.0f : f16_to_f32(static_cast<std::uint16_t>(h + 1));
    check_pair(f32_to_f16, h, lo, (lo + hi) * 0.5f, mismatches);
  }
  CHECK(mismatches == 0);
  mismatches = 0;
  for (std::uint16_t b = 0; b < 0x7f80; ++b) {
    // The midpoint is the next float32 bit pattern's half-way: one more bit below bfloat16's.
    check_pair(f32_to_bf16, b, bf16_to_f32(b),
               std::bit_cast<float>((static_cast<std::uint32_t>(b) << 16) | 0x8000u), mismatches);
  }
  CHECK(mismatches == 0);
}

#if defined(__FLT16_MAX__)
TEST_CASE("float16 conversions agree with the compiler's _Float16") {
  int mismatches = 0;
  for (std::uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float want = static_cast<float>(std::bit_cast<_Float16>(bits));
    if (!same(f16_to_f32(bits), want)) ++mismatches;
  }
  // A spread of float32 patterns (a prime stride over all 2^32), NaNs compared as NaNs.
  for (std::uint64_t x = 0; x <= 0xffffffffu; x += 4099) {
    const float f = std::bit_cast<float>(static_cast<std::uint32_t>(x));
    const std::uint16_t want = std::bit_cast<std::uint16_t>(static_cast<_Float16>(f));
    const std::uint16_t got = f32_to_f16(f);
    if (std::isnan(f) ? !std::isnan(f16_to_f32(got)) : got != want) ++mismatches;
  }
  CHECK(mismatches == 0);
}
#endif
