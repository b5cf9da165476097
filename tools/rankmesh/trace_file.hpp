// Trace files (docs/trace.md): reading one, checked against format version 1, and the timeline
// the report and the SVG work on. A bad file is a UsageError naming the file and what is wrong.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace rankmesh::tool {

constexpr int kTraceVersion = 1;

// A parsed trace file, version checked and every event's fields validated. `merged` is true for
// `rankmesh trace merge`'s output (otherData.ranks), whose ts are already on the world's clock.
struct TraceFile {
  std::string path;
  nlohmann::json document;
  bool merged = false;
};

TraceFile read_trace_file(const std::string& path);

// A lane of the timeline: one thread of one rank.
using Lane = std::pair<int, int>;  // (pid = global rank, tid)

// One complete event: an operation of a rank.
struct Operation {
  Lane lane;
  std::string name;
  bool p2p = false;  // cat "p2p", else a collective
  std::string group;
  long long group_id = 0;
  long long seq = 0;
  long long bytes = 0;
  double start = 0;  // µs on the world's time line
  double dur = 0;
  std::string transport;
  std::optional<std::string> error;
};

// One point-to-point message: its flow's two ends, and the operations that hold them.
struct Message {
  std::string id;
  Lane sender, receiver;
  double sent = 0, received = 0;  // the "s" and "f" ts
  // Indices into Timeline::operations of the X events holding the ends; -1 when not recorded.
  int send = -1, recv = -1;
};

// An instant event of category "failure".
struct Failure {
  Lane lane;
  double ts = 0;
  std::string name, message;
};

// A trace as the report and the SVG read it; a rank's own file is merged on its own first.
struct Timeline {
  nlohmann::json other_data;
  std::vector<Operation> operations;  // sorted by start
  std::vector<Message> messages;      // flows with both ends, sorted by send time
  int unmatched_flow_ends = 0;        // a flow end whose other end is not in the trace
  std::vector<Failure> failures;      // sorted by ts
  std::map<Lane, std::string> thread_names;  // from the thread_name metadata
  std::vector<Lane> lanes;  // every lane with an event, and tid 0 of a rank without any; sorted
  double begin = 0, end = 0;  // the first and last ts (an X event's end) of the trace
};

Timeline read_timeline(const std::string& path);

// A lane's thread as the trace names it ("engine", "stream"), else "tid N".
std::string thread_name(const Timeline& timeline, Lane lane);

}  // namespace rankmesh::tool
