// A process group: programs started and stopped together, their output relayed line by line.
// Each program runs under a supervisor of its own (supervisor.hpp) that ends the program's whole
// tree when the program exits, when the run stops it, and when the launcher dies, even by
// SIGKILL: nothing a program started outlives run_process_group(), nor a killed launcher.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rankmesh::tool {

struct ChildSpec {
  std::vector<std::string> argv;  // argv[0] is searched in PATH
  std::vector<std::string> env;   // the child's whole environment, "NAME=value" entries
  std::string prefix;             // written before each line of its stdout and stderr
  // A descriptor the program inherits under the same number (rank 0's registry socket), or -1.
  // The launcher closes its own copy once this child has started, so no later child gets it.
  int handed_fd = -1;
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
  int signal = 0;         // interrupted: the SIGINT, SIGTERM, SIGHUP or SIGQUIT received
};

// Runs the children until all have exited. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the
// caller are forwarded to them; when one fails, or `timeout` passes, the others get SIGTERM.
// Children still running `grace` after a signal are killed, their trees with them. Output is
// relayed without ever blocking on the caller's stdout or stderr, so `timeout` holds even when
// their reader stalls; after a signal or the timeout, output the reader has not taken within a
// second of the children's end is dropped. Throws std::system_error when a child cannot be started.
GroupEnding run_process_group(const std::vector<ChildSpec>& children,
                              std::optional<std::chrono::milliseconds> timeout,
                              std::chrono::milliseconds grace);

// Writes `text` to `fd` unless its reader takes none of it for `patience`: the launcher's last
// word must not hang it behind a stalled reader either.
void write_within(int fd, std::string_view text, std::chrono::milliseconds patience);

}  // namespace rankmesh::tool
