// The reductions of all_reduce and reduce_scatter.
#pragma once

#include <cstdint>

namespace rankmesh {

enum class ReduceOp : std::uint8_t { sum, max, min };

const char* to_string(ReduceOp op) noexcept;  // "sum", "max", "min"

}  // namespace rankmesh
