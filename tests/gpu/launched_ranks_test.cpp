// CUDA tensors across processes on one GPU: rankmesh-gpu-ranks under `rankmesh launch` with 2
// processes, exchanging device tensor dicts and reducing device tensors; and a peer that dies in
// the middle of a device transfer, which must fail the receiver with peer_failed, not hang it.
//
// The two binaries are found through RANKMESH_TOOL and RANKMESH_GPU_RANKS when set, else at the
// paths of this build, else next to this test binary (the GPU host's bundle is one folder).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gpu_support.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace {

namespace fs = std::filesystem;

std::string find_binary(const char* variable, const char* built_at, const char* name) {
  if (const char* set = std::getenv(variable); set != nullptr && *set != '\0') return set;
  if (fs::exists(built_at)) return built_at;
  std::error_code ignored;
  const fs::path beside = fs::read_symlink("/proc/self/exe", ignored).parent_path() / name;
  return beside.string();
}

struct Finished {
  int status = -1;  // the exit status; 128 + signal when a signal ended it; -1: killed at the limit
  std::string output;  // stdout and stderr, interleaved
};

// Runs argv with stdout and stderr into one pipe; kills it (the launcher ends its ranks with it)
// when it runs past `limit`.
Finished run(const std::vector<std::string>& argv, std::chrono::milliseconds limit) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  Finished done;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool killed = false;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buffer[4096];
    const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
    if (n <= 0) break;  // every writer has gone
    done.output.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (killed) {
    done.status = -1;
  } else {
    done.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return done;
}

Finished launch_gpu_ranks(const std::string& mode) {
  const std::string tool = find_binary("RANKMESH_TOOL", RANKMESH_TOOL_PATH, "rankmesh");
  const std::string ranks = find_binary("RANKMESH_GPU_RANKS", RANKMESH_GPU_RANKS_PATH, "rankmesh-gpu-ranks");
  REQUIRE_MESSAGE(::access(tool.c_str(), X_OK) == 0, "no rankmesh tool at " << tool);
  REQUIRE_MESSAGE(::access(ranks.c_str(), X_OK) == 0, "no rankmesh-gpu-ranks at " << ranks);
  // The launcher bounds the ranks itself; our limit, longer, bounds the launcher. Each run takes
  // seconds (a peer's death is noticed within the 2 s failure timeout): a hang must end well
  // inside the GPU host's budget for the whole suite (scripts/gpu_check.sh).
  const auto limit = scaled_timeout(std::chrono::seconds(40));
  const std::string launcher_limit = std::to_string(scaled_timeout(std::chrono::seconds(30)).count() / 1000);
  Finished done = run({tool, "launch", "--nproc-per-node", "2", "--timeout-s", launcher_limit, "--", ranks, "--mode", mode},
                      limit);
  MESSAGE("rankmesh launch ... rankmesh-gpu-ranks --mode " << mode << " (status " << done.status << "):\n"
                                                                << done.output);
  return done;
}

bool has_line(const std::string& output, const std::string& line) {
  // The launcher prefixes each line with "[rank R] ".
  return output.find("] " + line + "\n") != std::string::npos;
}

}  // namespace

TEST_CASE("two processes on one GPU exchange CUDA tensor dicts and reduce CUDA tensors") {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  Finished done = launch_gpu_ranks("exchange");
  CHECK(done.status == 0);
  CHECK(has_line(done.output, "rank 0: ok"));
  CHECK(has_line(done.output, "rank 1: ok"));
}

TEST_CASE("two processes on one GPU exchange CUDA tensor dicts through CUDA IPC (RANKMESH_CUDA_IPC=1)") {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  // The launcher and its ranks inherit the environment.
  const char* before = std::getenv("RANKMESH_CUDA_IPC");
  const std::string saved = before != nullptr ? before : "";
  ::setenv("RANKMESH_CUDA_IPC", "1", 1);
  Finished done = launch_gpu_ranks("exchange");
  if (before != nullptr) {
    ::setenv("RANKMESH_CUDA_IPC", saved.c_str(), 1);
  } else {
    ::unsetenv("RANKMESH_CUDA_IPC");
  }
  CHECK(done.status == 0);
  CHECK(has_line(done.output, "rank 0: ok"));
  CHECK(has_line(done.output, "rank 1: ok"));
  CHECK(has_line(done.output, "rank 0: CUDA IPC exports all released"));
  CHECK(has_line(done.output, "rank 1: CUDA IPC exports all released"));
  // The fallback to staging says so once; here IPC must have carried the tensors.
  CHECK(done.output.find("are staged through host memory") == std::string::npos);
}

TEST_CASE("a peer process dying in the middle of a CUDA transfer fails the receive with peer failed, no hang") {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  Finished done = launch_gpu_ranks("dead-peer");
  CHECK(done.status == 0);
  CHECK(has_line(done.output, "rank 1: leaving in the middle of the transfer"));
  CHECK(done.output.find("] rank 0: ") != std::string::npos);
  CHECK(done.output.find(" failed after ") != std::string::npos);
  CHECK(done.output.find(" with peer failed: ") != std::string::npos);
  CHECK(has_line(done.output, "rank 0: ok"));
}
