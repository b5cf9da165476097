// A rank's supervisor: the launcher's child that runs one rank program and owns its whole tree.
// A rank program (a Python script) cannot be trusted to handle its own death signal, and a
// subreaper flag on a killed launcher does nothing, so each rank gets a small process of ours
// between the launcher and the program. It dies with the launcher (PR_SET_PDEATHSIG) and is the
// subreaper of its rank's tree (PR_SET_CHILD_SUBREAPER), so every orphan of that tree, daemons
// that setsid and fork twice included, becomes its child; ending the tree kills the rank's process
// group and every child until none is left.
#pragma once

#include <signal.h>
#include <sys/types.h>

namespace rankmesh::tool {

// Makes a supervisor end its rank's tree at once (SIGKILL) and exit. The launcher sends it when a
// stopped rank's grace is over; the kernel sends it when the launcher dies, however it dies.
inline constexpr int kEndTreeSignal = SIGUSR1;

// What the launcher asks a supervisor to forward to its rank's process group.
inline constexpr int kForwardedSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

// Everything prepared before fork(), so that the supervisor needs nothing from the launcher.
struct SupervisedRank {
  char* const* argv;        // argv[0] is searched in PATH
  char* const* envp;        // the rank's whole environment
  const char* exec_failed;  // what the rank writes before strerror() when exec fails
  sigset_t rank_mask;       // the signal mask the rank program starts with
  pid_t launcher;           // the parent the supervisor must still have once it dies with it
  int stdin_fd, stdout_fd, stderr_fd;
  int handed_fd;  // inherited by the rank program under its number (ChildSpec::handed_fd), or -1
};

// Runs in the child the launcher has just forked, with every signal blocked; never returns.
// Starts the rank program in a process group of its own, forwards kForwardedSignals to it, and
// when the rank exits, on kEndTreeSignal or when the launcher dies, ends the whole tree, then
// exits as the rank did (its exit status, or killed by the same signal), so that the launcher
// reads the rank's ending from its own child.
[[noreturn]] void supervise(const SupervisedRank& rank);

}  // namespace rankmesh::tool
