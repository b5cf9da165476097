// Node identity decides whether two ranks talk through shared memory: processes that share the
// network namespace but not the pid namespace (whose /proc/<pid>/fd the shm transports open)
// are two nodes.
#include <doctest/doctest.h>

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "child_process.hpp"
#include "environment.hpp"

using namespace rankmesh;
using rankmesh::testing::Child;
using rankmesh::testing::Pipe;

TEST_CASE("node identity: a process in another pid namespace is another node") {
  unsetenv("RANKMESH_NODE_ID");
  const std::string mine = node_identity();
  CHECK(mine.find("/pidns:") != std::string::npos);
  CHECK(mine.find("/ipcns:") != std::string::npos);
  Pipe identity;
  Child child([&]() -> int {
    // Only the pid namespace changes (a user namespace first where that needs no privilege);
    // the network namespace stays. The new namespace holds the children made after unshare.
    if (unshare(CLONE_NEWPID) != 0 && unshare(CLONE_NEWUSER | CLONE_NEWPID) != 0) return 3;
    const pid_t inner = fork();
    if (inner < 0) return 4;
    if (inner == 0) {
      identity.put(node_identity());
      _exit(0);
    }
    int status = 0;
    waitpid(inner, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 5;
  });
  const std::string theirs = identity.get();
  const int code = child.wait();
  if (code == 3) {
    MESSAGE("skipped: this process may not make a pid namespace");
    return;
  }
  REQUIRE(code == 0);
  REQUIRE_FALSE(theirs.empty());
  CHECK(theirs != mine);
  // Same boot and network namespace: only the pid part differs.
  CHECK(theirs.substr(0, theirs.find("/pidns:")) == mine.substr(0, mine.find("/pidns:")));
}
