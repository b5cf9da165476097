// `rankmesh launch`: runs a program once per local rank, with torchrun's environment.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "process_group.hpp"
#include "rankmesh/runtime.hpp"

namespace rankmesh::tool {
namespace {

constexpr const char* kHelp =
    "usage: rankmesh launch [--nproc-per-node N] [--nnodes M --node-rank K --master-addr A\n"
    "                       --master-port P] [--timeout-s S] -- PROGRAM [ARGS...]\n"
    "Runs PROGRAM N times on this node, as ranks K*N .. K*N+N-1 of M*N, with torchrun's\n"
    "variables: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR and\n"
    "MASTER_PORT. Every output line is prefixed with '[rank R] '. When a rank fails, or S seconds\n"
    "pass, the other ranks are stopped and the launcher exits non-zero naming the cause.\n"
    "SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to the ranks. Nothing a rank starts\n"
    "outlives the rank, nor the launcher, even when the launcher is killed with SIGKILL.\n"
    "One node binds a free MASTER_PORT itself and hands rank 0 the socket, listening\n"
    "(RANKMESH_REGISTRY_FD), so no other process can take the port; unless RANKMESH_SECRET or\n"
    "RANKMESH_SECRET_FILE is set, it makes a random RANKMESH_SECRET for its ranks. Several nodes\n"
    "need --master-port and a secret.\n";

// How long stopped ranks get to exit before SIGKILL.
constexpr std::chrono::seconds kGrace{5};
// How long the last line waits for a stalled reader of stderr.
constexpr std::chrono::seconds kReportPatience{1};

// Exit statuses besides 0 and the usage error's 2; an interrupted run exits with 128 + signal,
// as a shell reports a process killed by it.
constexpr int kRankFailed = 1;
constexpr int kTimedOut = 124;  // timeout(1)'s

struct Launch {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  std::optional<std::chrono::seconds> timeout;
  std::vector<std::string> program;
};

// An integer flag within [low, high], or nullopt when absent.
std::optional<int> integer_in(const Arguments& args, const std::string& flag, int low, int high) {
  auto value = args.text(flag);
  if (!value) return std::nullopt;
  int n = 0;
  const char* end = value->data() + value->size();
  auto [ptr, ec] = std::from_chars(value->data(), end, n);
  if (ec != std::errc() || ptr != end || value->empty() || n < low || n > high)
    throw UsageError(flag + " must be an integer from " + std::to_string(low) + " to " +
                     std::to_string(high) + ", got '" + *value + "'");
  return n;
}

Launch parse(const std::vector<std::string>& argv) {
  auto separator = std::find(argv.begin(), argv.end(), "--");
  if (separator == argv.end()) throw UsageError("needs '-- PROGRAM [ARGS...]' after its options");
  Launch launch;
  launch.program.assign(separator + 1, argv.end());
  if (launch.program.empty()) throw UsageError("no PROGRAM after '--'");

  Arguments args({argv.begin(), separator},
                 {"--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--master-port",
                  "--timeout-s"},
                 {});
  launch.nproc_per_node = args.positive("--nproc-per-node").value_or(1);
  launch.nnodes = args.positive("--nnodes").value_or(1);
  launch.node_rank = integer_in(args, "--node-rank", 0, launch.nnodes - 1).value_or(0);
  launch.master_addr = args.text("--master-addr").value_or(launch.master_addr);
  if (launch.master_addr.empty()) throw UsageError("--master-addr must not be empty");
  launch.master_port = integer_in(args, "--master-port", 1, 65535).value_or(0);
  if (launch.nnodes > 1 && launch.master_port == 0)
    throw UsageError("--nnodes " + std::to_string(launch.nnodes) +
                     " needs --master-port, the same on every node");
  if (auto seconds = args.positive("--timeout-s")) launch.timeout = std::chrono::seconds(*seconds);
  return launch;
}

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// Rank 0's registry socket: bound to --master-addr on a port the kernel picks, listening, and
// handed to rank 0 (RANKMESH_REGISTRY_FD), which serves the registry on it. Choosing a free
// port and letting rank 0 bind it later (torchrun's way) leaves it free in between for any local
// process to take, and with it the world's start: the port is never free here.
struct RegistrySocket {
  int fd = -1;
  int port = 0;
};

RegistrySocket registry_socket(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), "0", &hints, &found); rc != 0)
    throw UsageError("--master-addr " + host + " does not resolve: " + ::gai_strerror(rc));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> owned(found, ::freeaddrinfo);
  RegistrySocket registry;
  registry.fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (registry.fd < 0) throw_errno("cannot make rank 0's registry socket");
  sockaddr_storage bound{};
  socklen_t length = sizeof bound;
  if (::bind(registry.fd, found->ai_addr, found->ai_addrlen) != 0 ||
      ::listen(registry.fd, SOMAXCONN) != 0 ||
      ::getsockname(registry.fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) {
    const int error = errno;
    ::close(registry.fd);
    errno = error;
    throw_errno("cannot listen on --master-addr " + host + " for rank 0's registry");
  }
  registry.port = ntohs(bound.ss_family == AF_INET6
                            ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                            : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  return registry;
}

// 32 random bytes, hex-encoded.
std::string random_secret() {
  unsigned char bytes[32];
  if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes))
    throw_errno("cannot generate RANKMESH_SECRET: getrandom");
  constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char byte : bytes) {
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 0xf]);
  }
  return hex;
}

bool set_in_environment(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0';
}

using Variables = std::vector<std::pair<std::string, std::string>>;

// The launcher's environment with `overrides` in place of variables of the same names.
std::vector<std::string> environment_with(const Variables& overrides) {
  std::vector<std::string> env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string_view text(*entry);
    std::string_view name = text.substr(0, text.find('='));
    bool overridden = std::any_of(overrides.begin(), overrides.end(),
                                  [&](const auto& variable) { return variable.first == name; });
    if (!overridden) env.emplace_back(text);
  }
  for (const auto& [name, value] : overrides) env.push_back(name + "=" + value);
  return env;
}

std::string describe(const ChildExit& exit) {
  if (!exit.signaled) return "exited with status " + std::to_string(exit.value);
  std::string text = "was killed by signal " + std::to_string(exit.value);
  if (const char* name = ::sigabbrev_np(exit.value)) text += std::string(" (SIG") + name + ")";
  return text;
}

// Writes "rankmesh launch: <line>" to stderr, waiting at most kReportPatience for its reader.
void report(const std::string& line) {
  write_within(STDERR_FILENO, "rankmesh launch: " + line + "\n", kReportPatience);
}

}  // namespace

int launch_command(const std::vector<std::string>& argv) {
  if (argv.size() == 1 && (argv[0] == "--help" || argv[0] == "-h")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  Launch launch = parse(argv);

  Variables shared = {
      {"WORLD_SIZE", std::to_string(launch.nnodes * launch.nproc_per_node)},
      {"LOCAL_WORLD_SIZE", std::to_string(launch.nproc_per_node)},
      {"NODE_RANK", std::to_string(launch.node_rank)},
      {"MASTER_ADDR", launch.master_addr},
  };
  // --master-port given (several nodes): rank 0 binds it itself.
  RegistrySocket registry;
  if (launch.master_port == 0) registry = registry_socket(launch.master_addr);
  shared.emplace_back("MASTER_PORT",
                      std::to_string(launch.master_port ? launch.master_port : registry.port));
  if (!set_in_environment("RANKMESH_SECRET") && !set_in_environment("RANKMESH_SECRET_FILE")) {
    // Every node must hold the same secret, and only the operator can hand it to all of them.
    if (launch.nnodes > 1)
      throw UsageError("--nnodes " + std::to_string(launch.nnodes) +
                       " needs a shared secret: set RANKMESH_SECRET or RANKMESH_SECRET_FILE on every node");
    // Only the children get it: it is never printed, nor set in the launcher's own environment.
    shared.emplace_back("RANKMESH_SECRET", random_secret());
  }

  std::vector<ChildSpec> children;
  for (int local = 0; local < launch.nproc_per_node; ++local) {
    int rank = launch.node_rank * launch.nproc_per_node + local;
    Variables variables = shared;
    variables.emplace_back("RANK", std::to_string(rank));
    variables.emplace_back("LOCAL_RANK", std::to_string(local));
    const int handed = rank == 0 ? registry.fd : -1;
    if (handed >= 0) variables.emplace_back("RANKMESH_REGISTRY_FD", std::to_string(handed));
    children.push_back({launch.program, environment_with(variables),
                        "[rank " + std::to_string(rank) + "] ", handed});
  }

  GroupEnding ending = run_process_group(children, launch.timeout, scaled_timeout(kGrace));
  switch (ending.cause) {
    case GroupEnding::Cause::all_succeeded:
      return 0;
    case GroupEnding::Cause::child_failed: {
      int rank = launch.node_rank * launch.nproc_per_node + static_cast<int>(ending.child);
      report("rank " + std::to_string(rank) + " " + describe(ending.exit));
      return kRankFailed;
    }
    case GroupEnding::Cause::interrupted:
      report(std::string("received SIG") + ::sigabbrev_np(ending.signal) + "; stopped every rank");
      return 128 + ending.signal;
    case GroupEnding::Cause::timed_out:
      report("timed out after " + std::to_string(launch.timeout->count()) + " s; stopped every rank");
      return kTimedOut;
  }
  return kRankFailed;
}

}  // namespace rankmesh::tool
