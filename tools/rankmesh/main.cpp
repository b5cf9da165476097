// rankmesh: the command-line tool. Subcommands: layout, launch, bench, trace.
#include <cstdio>
#include <string>
#include <system_error>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "rankmesh/error.hpp"

namespace {

constexpr const char* kUsage =
    "usage: rankmesh <command> [options]\n"
    "commands:\n"
    "  layout   print the parallel groups of a configuration (rankmesh layout --help)\n"
    "  launch   run a program once per rank with torchrun's variables (rankmesh launch --help)\n"
    "  bench    measure the transports and collectives, JSON out (rankmesh bench --help)\n"
    "  trace    merge ranks' trace files, report on them, draw them (rankmesh trace --help)\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  std::string command = args[0];
  args.erase(args.begin());
  try {
    if (command == "layout") return rankmesh::tool::layout_command(args);
    if (command == "launch") return rankmesh::tool::launch_command(args);
    if (command == "bench") return rankmesh::tool::bench_command(args);
    if (command == "trace") return rankmesh::tool::trace_command(args);
    throw rankmesh::tool::UsageError("unknown command '" + command + "' (try rankmesh --help)");
  } catch (const rankmesh::tool::UsageError& e) {
    std::fprintf(stderr, "rankmesh %s: %s\n", command.c_str(), e.what());
    return 2;
  } catch (const rankmesh::Error& e) {
    // Configurations come from the command line, so an impossible one is a usage error too.
    std::fprintf(stderr, "rankmesh %s: %s\n", command.c_str(), e.what());
    return 2;
  } catch (const std::system_error& e) {
    // The system refused something (a port, a fork): not the user's mistake, so not status 2.
    std::fprintf(stderr, "rankmesh %s: %s\n", command.c_str(), e.what());
    return 1;
  }
}
