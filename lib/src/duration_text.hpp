// Durations in error messages: "250 ms", "40 us".
#pragma once

#include <chrono>
#include <string>

namespace rankmesh::detail {

inline std::string duration_text(std::chrono::nanoseconds d) {
  using namespace std::chrono;
  if (d >= milliseconds(1)) return std::to_string(duration_cast<milliseconds>(d).count()) + " ms";
  return std::to_string(duration_cast<microseconds>(d).count()) + " us";
}

}  // namespace rankmesh::detail
