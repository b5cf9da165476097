#include "reduce.hpp"

#include <bit>
#include <string>
#include <type_traits>

#include "rankmesh/error.hpp"
#include "half.hpp"

namespace rankmesh {
namespace {

// How elements are stored and in which type they are combined. The kernel touches elements
// only through load/store, so each instantiation is one tight typed loop.
template <class T>
struct Plain {
  using Stored = T;
  using Acc = T;
  static Acc load(Stored v) { return v; }
  static Stored store(Acc a) { return a; }
};

struct Float16 {
  using Stored = std::uint16_t;
  using Acc = float;
  static Acc load(Stored v) { return f16_to_f32(v); }
  static Stored store(Acc a) { return f32_to_f16(a); }
};

struct BFloat16 {
  using Stored = std::uint16_t;
  using Acc = float;
  static Acc load(Stored v) { return bf16_to_f32(v); }
  static Stored store(Acc a) { return f32_to_bf16(a); }
};

template <class F>
using BitsOf = std::conditional_t<sizeof(F) == 4, std::uint32_t, std::uint64_t>;

// c ? a : b on the bits. A plain ?: between float results leaves a branch around a float
// operation that could trap, which compilers will not vectorise.
template <class F>
F select(bool c, F a, F b) {
  using U = BitsOf<F>;
  const U mask = U{0} - U{c};
  return std::bit_cast<F>(
      static_cast<U>((std::bit_cast<U>(a) & mask) | (std::bit_cast<U>(b) & ~mask)));
}

template <class F>
F and_bits(F a, F b) {
  using U = BitsOf<F>;
  return std::bit_cast<F>(static_cast<U>(std::bit_cast<U>(a) & std::bit_cast<U>(b)));
}

template <class F>
F or_bits(F a, F b) {
  using U = BitsOf<F>;
  return std::bit_cast<F>(static_cast<U>(std::bit_cast<U>(a) | std::bit_cast<U>(b)));
}

template <class F>
bool unordered(F a, F b) {
  return (a != a) | (b != b);
}

struct Sum {
  template <class A>
  static A apply(A a, A b) {
    if constexpr (std::is_integral_v<A>) {
      // Unsigned arithmetic wraps by definition; signed overflow would be undefined.
      using U = std::make_unsigned_t<A>;
      return static_cast<A>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
    } else {
      return a + b;
    }
  }
};

// For floats, IEEE 754-2019 maximum/minimum: equal values can differ only as +0/-0, where the
// sign bits decide (AND gives +0 unless both are -0, OR gives -0 unless both are +0); if either
// is NaN, a + b is that NaN.
struct Max {
  template <class A>
  static A apply(A a, A b) {
    if constexpr (std::is_integral_v<A>) {
      return a < b ? b : a;
    } else {
      const A larger = select(a < b, b, a);
      const A ordered = select(a == b, and_bits(a, b), larger);
      return select(unordered(a, b), a + b, ordered);
    }
  }
};

struct Min {
  template <class A>
  static A apply(A a, A b) {
    if constexpr (std::is_integral_v<A>) {
      return b < a ? b : a;
    } else {
      const A smaller = select(b < a, b, a);
      const A ordered = select(a == b, or_bits(a, b), smaller);
      return select(unordered(a, b), a + b, ordered);
    }
  }
};

// Elements per block: the accumulators of one block live on the stack (4 KiB, within L1), so
// every input is read once and `out` written once, with no allocation. Full blocks have a
// compile-time length, which lets the compiler vectorise them without a scalar epilogue.
constexpr std::size_t kBlockBytes = 4096;

template <class Codec, class Op>
void reduce_typed(std::span<const void* const> inputs, void* out_raw, std::size_t count) {
  using Stored = typename Codec::Stored;
  using Acc = typename Codec::Acc;
  constexpr std::size_t kBlock = kBlockBytes / sizeof(Acc);

  Stored* out = static_cast<Stored*>(out_raw);
  Acc acc[kBlock];

  // Reads every input's block before writing `out`'s, which is what makes out == inputs[k]
  // safe for any k.
  auto block = [&](std::size_t begin, auto length) {
    const Stored* first = static_cast<const Stored*>(inputs[0]) + begin;
    for (std::size_t i = 0; i < length; ++i) acc[i] = Codec::load(first[i]);
    for (std::size_t k = 1; k < inputs.size(); ++k) {
      const Stored* in = static_cast<const Stored*>(inputs[k]) + begin;
      for (std::size_t i = 0; i < length; ++i) acc[i] = Op::apply(acc[i], Codec::load(in[i]));
    }
    for (std::size_t i = 0; i < length; ++i) out[begin + i] = Codec::store(acc[i]);
  };

  std::size_t begin = 0;
  for (; count - begin >= kBlock; begin += kBlock) {
    block(begin, std::integral_constant<std::size_t, kBlock>{});
  }
  if (begin < count) block(begin, count - begin);
}

template <class Codec>
void reduce_op(ReduceOp op, std::span<const void* const> inputs, void* out, std::size_t count) {
  switch (op) {
    case ReduceOp::sum: return reduce_typed<Codec, Sum>(inputs, out, count);
    case ReduceOp::max: return reduce_typed<Codec, Max>(inputs, out, count);
    case ReduceOp::min: return reduce_typed<Codec, Min>(inputs, out, count);
  }
}

bool is_known(DType dtype) noexcept {
  return static_cast<std::size_t>(dtype) < kDTypeCount;
}

bool is_known(ReduceOp op) noexcept {
  return op == ReduceOp::sum || op == ReduceOp::max || op == ReduceOp::min;
}

}  // namespace

const char* to_string(ReduceOp op) noexcept {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::max: return "max";
    case ReduceOp::min: return "min";
  }
  return "unknown reduce op";
}

bool is_reducible(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32:
    case DType::f16:
    case DType::bf16:
    case DType::f64:
    case DType::i8:
    case DType::i16:
    case DType::i32:
    case DType::i64:
    case DType::u8: return true;
    case DType::boolean:
    case DType::fp8_e4m3:
    case DType::fp8_e5m2: return false;
  }
  return false;
}

void check_reducible(DType dtype, ReduceOp op) {
  if (!is_known(op)) {
    throw Error(Errc::invalid_argument, "unknown reduce op " +
                                            std::to_string(static_cast<int>(op)) +
                                            " (expected sum, max or min)");
  }
  if (!is_known(dtype)) {
    throw Error(Errc::invalid_argument, std::string(to_string(op)) +
                                            " cannot reduce elements of unknown dtype code " +
                                            std::to_string(static_cast<int>(dtype)));
  }
  if (!is_reducible(dtype)) {
    throw Error(Errc::invalid_argument,
                std::string(to_string(op)) + " cannot reduce " + to_string(dtype) +
                    " tensors: bool and float8 types have no reductions; convert to a wider "
                    "type (float32, bfloat16, uint8, ...) first");
  }
}

void reduce_many(std::span<const void* const> inputs, void* out, std::size_t count, DType dtype,
                 ReduceOp op) {
  check_reducible(dtype, op);
  auto refuse = [&](const std::string& why) {
    return Error(Errc::invalid_argument,
                 std::string(to_string(op)) + " of " + to_string(dtype) + ": " + why);
  };
  if (inputs.empty()) throw refuse("no inputs to reduce");
  if (count == 0) return;
  if (out == nullptr) throw refuse("the output pointer is null");
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    if (inputs[k] == nullptr) {
      throw refuse("input " + std::to_string(k) + " of " + std::to_string(inputs.size()) +
                   " is a null pointer");
    }
  }

  switch (dtype) {
    case DType::f32: return reduce_op<Plain<float>>(op, inputs, out, count);
    case DType::f64: return reduce_op<Plain<double>>(op, inputs, out, count);
    case DType::f16: return reduce_op<Float16>(op, inputs, out, count);
    case DType::bf16: return reduce_op<BFloat16>(op, inputs, out, count);
    case DType::i8: return reduce_op<Plain<std::int8_t>>(op, inputs, out, count);
    case DType::i16: return reduce_op<Plain<std::int16_t>>(op, inputs, out, count);
    case DType::i32: return reduce_op<Plain<std::int32_t>>(op, inputs, out, count);
    case DType::i64: return reduce_op<Plain<std::int64_t>>(op, inputs, out, count);
    case DType::u8: return reduce_op<Plain<std::uint8_t>>(op, inputs, out, count);
    case DType::boolean:
    case DType::fp8_e4m3:
    case DType::fp8_e5m2: break;  // refused by check_reducible above
  }
}

}  // namespace rankmesh
