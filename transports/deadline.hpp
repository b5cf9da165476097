// Every blocking call in rankmesh takes a deadline.
#pragma once

#include <chrono>

namespace rankmesh {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline deadline_after(std::chrono::nanoseconds timeout) { return Clock::now() + timeout; }

}  // namespace rankmesh
