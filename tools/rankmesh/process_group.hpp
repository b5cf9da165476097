// A process group: programs started and stopped together, their output relayed line by line.
// The children share one new process group and die with the launcher, even when it is killed
// with SIGKILL (PR_SET_PDEATHSIG); nothing left in the group outlives run_process_group().
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace rankmesh::tool {

struct ChildSpec {
  std::vector<std::string> argv;  // argv[0] is searched in PATH
  std::vector<std::string> env;   // the child's whole environment, "NAME=value" entries
  std::string prefix;             // written before each line of its stdout and stderr
};

// How a child ended: its exit status, or the signal that killed it.
struct ChildExit {
  bool signaled = false;
  int value = 0;
};

struct GroupEnding {
  enum class Cause { all_succeeded, child_failed, interrupted, timed_out };
  Cause cause = Cause::all_succeeded;
  std::size_t child = 0;  // child_failed: index of the first child that failed
  ChildExit exit;         // child_failed: how it ended
  int signal = 0;         // interrupted: the SIGINT or SIGTERM the caller received
};

// Runs the children until all have exited. SIGINT and SIGTERM sent to the caller are forwarded
// to them; when one fails, or `timeout` passes, the others get SIGTERM. Children still running
// `grace` after a SIGTERM get SIGKILL. Throws std::system_error when a child cannot be started.
GroupEnding run_process_group(const std::vector<ChildSpec>& children,
                              std::optional<std::chrono::milliseconds> timeout,
                              std::chrono::milliseconds grace);

}  // namespace rankmesh::tool
