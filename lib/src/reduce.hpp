// Elementwise reductions: the one kernel behind every reducing collective, so that all of them
// agree bit for bit with a one-rank reference computation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "rankmesh/dtype.hpp"
#include "rankmesh/reduce_op.hpp"

namespace rankmesh {

// Whether `dtype` has reductions: everything but bool and the float8 types.
bool is_reducible(DType dtype) noexcept;

// Throws Error(invalid_argument) naming the op and dtype when `dtype` cannot be reduced, or when
// `op` is not a ReduceOp. Collectives call it before any communication, so that every rank
// refuses up front instead of failing mid-exchange.
void check_reducible(DType dtype, ReduceOp op);

// out[i] = inputs[0][i] op inputs[1][i] op ... op inputs[n-1][i] for i < count, combined left to
// right in exactly this order: a collective passes contributions in ascending group rank to
// match the one-rank reference.
//
// - float32, float64: IEEE arithmetic in the element type (no reassociation; the library is
//   never built with -ffast-math).
// - float16, bfloat16: every element is widened to float32, combined in float32 and rounded to
//   nearest even once at the end, as a reference that accumulates in float32 does.
// - Integers: sum wraps around modulo 2^bits (two's complement), as torch and numpy do.
// - max/min of floats follow IEEE 754-2019 maximum/minimum: NaN if any input is NaN, and
//   -0 < +0. They are therefore independent of order, up to which NaN comes out.
//
// `out` may be the same pointer as any input (in place); it must not partially overlap one.
// With count 0 nothing is read or written. Allocates nothing. Throws Error(invalid_argument)
// for what check_reducible refuses, for no inputs, and for a null pointer when count > 0.
void reduce_many(std::span<const void* const> inputs, void* out, std::size_t count, DType dtype,
                 ReduceOp op);

}  // namespace rankmesh
