// Helpers of the shared-memory transport tests (shm_channel_test, shm_broadcast_test): whether a
// segment is still offered, its creator's descriptor, whether a thread is parked, bounds that
// scale with RANKMESH_TIMEOUT_SCALE, and the code of an error thrown.
#pragma once

#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "rankmesh/error.hpp"
#include "rankmesh/runtime.hpp"

namespace rankmesh::testing {

// Whether the creator of segment `name` ("/proc/<pid>/fd/<fd>#<inode>") still offers it.
inline bool offered(const std::string& name) {
  return access(name.substr(0, name.find('#')).c_str(), F_OK) == 0;
}

// The code of the Error that `action` throws; nullopt when it throws none.
inline std::optional<Errc> error_code_of(auto&& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.code();
  }
  return std::nullopt;
}

// The descriptor through which this process offers its segment `name`.
inline int handoff_of(const std::string& name) {
  int pid = 0, fd = -1;
  REQUIRE(std::sscanf(name.c_str(), "/proc/%d/fd/%d#", &pid, &fd) == 2);
  REQUIRE(pid == getpid());
  return fd;
}

// A configured bound, times RANKMESH_TIMEOUT_SCALE (slow or sanitized machines).
template <class Rep, class Period>
std::chrono::milliseconds configured(std::chrono::duration<Rep, Period> base) {
  return scaled_timeout(std::chrono::duration_cast<std::chrono::milliseconds>(base));
}

// Whether thread `tid` of this process is asleep (parked in a wait), not running or spinning.
inline bool thread_sleeps(pid_t tid) {
  if (tid == 0) return false;
  std::ifstream stat("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::stringstream text;
  text << stat.rdbuf();
  const std::string line = text.str();
  const auto after_name = line.rfind(')');
  return after_name != std::string::npos && after_name + 2 < line.size() &&
         line[after_name + 2] == 'S';
}

}  // namespace rankmesh::testing
