// `rankmesh trace merge|report|svg`: reads trace files, writes a merged trace, a report or a
// picture to -o FILE or stdout.
#include <charconv>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "trace_file.hpp"
#include "trace_merge.hpp"
#include "trace_report.hpp"
#include "trace_svg.hpp"

namespace rankmesh::tool {
namespace {

constexpr const char* kHelp =
    "usage: rankmesh trace merge DIR [-o run.json] [--partial]\n"
    "       rankmesh trace report TRACE [-o report.md]\n"
    "       rankmesh trace svg TRACE [-o timeline.svg] [--from US] [--to US] [--max-ops N]\n"
    "Works on the trace files ranks write with RANKMESH_TRACE=DIR (docs/trace.md).\n"
    "  merge   DIR's rank-<R>.trace.json files as one trace on one time line (each file's\n"
    "          clock offset applied); Perfetto and chrome://tracing load it. Every rank of the\n"
    "          world must have its file, unless --partial.\n"
    "  report  markdown: per operation and group count, bytes, latency p50/p99; per collective\n"
    "          group the entry skew p50/p99 and the rank that arrived last most often; per p2p\n"
    "          pair the time the receiver waited for the sender; failures.\n"
    "  svg     a timeline picture: a lane per rank and thread, operations coloured by name,\n"
    "          an arrow per message, a time axis. --from/--to: the window, in µs since the\n"
    "          trace's first event; --max-ops N (default 5000): draw at most N operations.\n"
    "TRACE is a merged trace or one rank's file. Without -o the result goes to stdout.\n";

void write_output(const Arguments& args, const std::string& text) {
  auto path = args.text("-o");
  if (!path) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  std::ofstream out(*path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw UsageError("cannot write '" + *path + "'");
}

double microseconds(const Arguments& args, const std::string& flag) {
  std::string value = *args.text(flag);
  double us = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), us);
  if (ec != std::errc() || end != value.data() + value.size() || value.empty() || us < 0)
    throw UsageError(flag + " must be a number of µs >= 0, got '" + value + "'");
  return us;
}

}  // namespace

int trace_command(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h" ||
      (argv.size() > 1 && (argv[1] == "--help" || argv[1] == "-h"))) {
    std::fputs(kHelp, argv.empty() ? stderr : stdout);
    return argv.empty() ? 2 : 0;
  }
  const std::string& verb = argv[0];
  if (verb != "merge" && verb != "report" && verb != "svg")
    throw UsageError("unknown trace command '" + verb + "' (merge, report or svg)");
  if (argv.size() < 2 || argv[1].rfind("-", 0) == 0)
    throw UsageError(std::string("trace ") + verb + " needs " + (verb == "merge" ? "a DIR" : "a TRACE file"));
  const std::string& input = argv[1];
  std::vector<std::string> rest(argv.begin() + 2, argv.end());

  // The readers check the fields they use; a wrong type they did not foresee still ends in one line.
  try {
    if (verb == "merge") {
      Arguments args(rest, {"-o"}, {"--partial"});
      write_output(args, trace_text(merge_trace_directory(input, args.has("--partial"))));
    } else if (verb == "report") {
      Arguments args(rest, {"-o"}, {});
      write_output(args, trace_report(read_timeline(input)));
    } else {
      Arguments args(rest, {"-o", "--from", "--to", "--max-ops"}, {});
      SvgOptions options;
      if (args.has("--from")) options.from_us = microseconds(args, "--from");
      if (args.has("--to")) options.to_us = microseconds(args, "--to");
      options.max_operations = args.positive("--max-ops").value_or(options.max_operations);
      write_output(args, trace_svg(read_timeline(input), options));
    }
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(input + ": unexpected content (" + e.what() + ")");
  }
  return 0;
}

}  // namespace rankmesh::tool
