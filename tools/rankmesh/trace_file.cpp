#include "trace_file.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>

#include "arguments.hpp"
#include "trace_merge.hpp"

namespace rankmesh::tool {
namespace {

using nlohmann::json;

[[noreturn]] void bad_file(const std::string& path, const std::string& why) {
  throw UsageError(path + ": " + why);
}

bool is_number(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number();
}

bool is_integer(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number_integer();
}

void check_other_data(const std::string& path, const json& other, bool merged) {
  if (merged) {
    if (!is_integer(other, "world_size")) bad_file(path, "otherData.world_size is not an integer");
    for (const json& rank : other["ranks"])
      if (!rank.is_object() || !is_integer(rank, "rank"))
        bad_file(path, "otherData.ranks holds an entry without an integer rank");
    return;
  }
  for (const char* key : {"rank", "world_size"})
    if (!is_integer(other, key)) bad_file(path, std::string("otherData.") + key + " is not an integer");
  for (const char* key : {"clock_offset_us", "clock_error_us"})
    if (!is_number(other, key)) bad_file(path, std::string("otherData.") + key + " is not a number");
}

// The fields the tools read, with the types the format gives them; the rest is carried along.
void check_event(const std::string& path, std::size_t index, const json& event) {
  auto fail = [&](const std::string& why) {
    bad_file(path, "event " + std::to_string(index) + " " + why);
  };
  if (!event.is_object()) fail("is not an object");
  auto ph = event.find("ph");
  if (ph == event.end() || !ph->is_string()) fail("has no string 'ph'");
  if (!is_integer(event, "pid")) fail("has no integer 'pid'");
  if (*ph == "M") return;
  if (!is_integer(event, "tid")) fail("has no integer 'tid'");
  if (!is_number(event, "ts")) fail("has no numeric 'ts'");
  auto name = event.find("name");
  if (name == event.end() || !name->is_string()) fail("has no string 'name'");
  if (*ph == "X") {
    if (!is_number(event, "dur") || event["dur"].get<double>() < 0) fail("(ph X) has no 'dur' >= 0");
    auto args = event.find("args");
    if (args != event.end() && !args->is_object()) fail("has 'args' that is not an object");
  } else if (*ph == "s" || *ph == "f") {
    auto id = event.find("id");
    if (id == event.end() || !id->is_string()) fail("(flow) has no string 'id'");
  }
}

template <typename T>
T arg_or(const json& args, const char* key, T fallback) {
  auto it = args.find(key);
  if (it == args.end() || it->is_null()) return fallback;
  return it->get<T>();
}

Lane lane_of(const json& event) { return {event["pid"].get<int>(), event["tid"].get<int>()}; }

// A lane's X events by start, and the longest one's duration: how far back one may hold a ts.
struct LaneOperations {
  std::vector<int> indices;
  double longest = 0;
};

// The operation of `lane` whose [start, start + dur] holds `ts`; -1 when none does. Operations
// of a thread may overlap (an operation that returns a handle), so the search walks back over
// every operation that started late enough to still be running.
int enclosing(const std::map<Lane, LaneOperations>& by_lane, const std::vector<Operation>& ops,
              Lane lane, double ts) {
  auto it = by_lane.find(lane);
  if (it == by_lane.end()) return -1;
  const std::vector<int>& indices = it->second.indices;
  auto at = std::upper_bound(indices.begin(), indices.end(), ts,
                             [&](double t, int i) { return t < ops[i].start; });
  while (at != indices.begin()) {
    --at;
    const Operation& op = ops[*at];
    // Files give times to the nanosecond: start + dur may round a hair below an end point that
    // the recorder placed exactly at the operation's end.
    constexpr double kHalfNanosecond = 0.0005;
    if (ts <= op.start + op.dur + kHalfNanosecond) return *at;
    if (op.start + it->second.longest < ts) break;
  }
  return -1;
}

}  // namespace

TraceFile read_trace_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) bad_file(path, "cannot be read");
  std::string text(std::istreambuf_iterator<char>(in), {});
  if (in.bad()) bad_file(path, "cannot be read");
  TraceFile file{path, json(), false};
  try {
    file.document = json::parse(text);
  } catch (const json::parse_error& e) {
    bad_file(path, std::string("not valid JSON (") + e.what() + ")");
  }
  const json& doc = file.document;
  if (!doc.is_object()) bad_file(path, "not a JSON object");
  auto other = doc.find("otherData");
  if (other == doc.end() || !other->is_object() || !other->contains("rankmesh_trace"))
    bad_file(path, "not a rankmesh trace file (no otherData.rankmesh_trace)");
  const json& version = (*other)["rankmesh_trace"];
  if (!version.is_number_integer() || version.get<long long>() != kTraceVersion)
    bad_file(path, "trace format version " + version.dump() + "; this rankmesh reads version " +
                       std::to_string(kTraceVersion));
  file.merged = other->contains("ranks");
  if (file.merged && !(*other)["ranks"].is_array()) bad_file(path, "otherData.ranks is not an array");
  check_other_data(path, *other, file.merged);
  auto events = doc.find("traceEvents");
  if (events == doc.end() || !events->is_array()) bad_file(path, "has no traceEvents array");
  for (std::size_t i = 0; i < events->size(); ++i) check_event(path, i, (*events)[i]);
  return file;
}

Timeline read_timeline(const std::string& path) {
  TraceFile file = read_trace_file(path);
  json merged = file.merged ? std::move(file.document) : merge_trace_files({std::move(file)});
  Timeline timeline;
  timeline.other_data = merged["otherData"];
  std::map<std::string, std::pair<Lane, double>> sends, receives;  // flow ends by id
  std::set<Lane> lanes;
  std::set<int> ranks;
  bool seen_time = false;
  try {
    for (const json& event : merged["traceEvents"]) {
      const std::string ph = event["ph"];
      if (ph == "M") {
        if (event.value("name", "") == "thread_name" && event.contains("tid") && event.contains("args"))
          timeline.thread_names[lane_of(event)] = event["args"].value("name", "");
        continue;
      }
      Lane lane = lane_of(event);
      lanes.insert(lane);
      double ts = event["ts"];
      double end = ts + (ph == "X" ? event["dur"].get<double>() : 0.0);
      if (!seen_time) timeline.begin = ts, timeline.end = end, seen_time = true;
      timeline.begin = std::min(timeline.begin, ts);
      timeline.end = std::max(timeline.end, end);
      if (ph == "X") {
        static const json kNoArgs = json::object();
        const json& args = event.contains("args") ? event["args"] : kNoArgs;
        Operation op;
        op.lane = lane;
        op.name = event["name"];
        op.p2p = event.value("cat", "") == "p2p";
        op.group = arg_or<std::string>(args, "group", "?");
        op.group_id = arg_or<long long>(args, "group_id", 0);
        op.seq = arg_or<long long>(args, "seq", -1);
        op.bytes = arg_or<long long>(args, "bytes", 0);
        op.start = ts;
        op.dur = event["dur"];
        op.transport = arg_or<std::string>(args, "transport", "");
        if (args.contains("error")) op.error = args["error"].get<std::string>();
        timeline.operations.push_back(std::move(op));
      } else if (ph == "s" || ph == "f") {
        (ph == "s" ? sends : receives)[event["id"].get<std::string>()] = {lane, ts};
      } else if (ph == "i" && event.value("cat", "") == "failure") {
        std::string message = event.contains("args") ? event["args"].value("message", "") : "";
        timeline.failures.push_back({lane, ts, event["name"], message});
      }
    }
    // A rank without events still gets its lane, empty: the picture shows it was there.
    for (const json& rank : timeline.other_data["ranks"]) ranks.insert(rank["rank"].get<int>());
    for (const json& rank : timeline.other_data.value("missing_ranks", json::array()))
      ranks.insert(rank.get<int>());
  } catch (const json::exception& e) {
    bad_file(path, std::string("a field has the wrong type (") + e.what() + ")");
  }
  for (int rank : ranks)
    if (std::none_of(lanes.begin(), lanes.end(), [&](Lane lane) { return lane.first == rank; }))
      lanes.insert({rank, 0});
  timeline.lanes.assign(lanes.begin(), lanes.end());

  std::vector<Operation>& ops = timeline.operations;
  std::stable_sort(ops.begin(), ops.end(),
                   [](const Operation& a, const Operation& b) { return a.start < b.start; });
  std::map<Lane, LaneOperations> by_lane;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    LaneOperations& lane = by_lane[ops[i].lane];
    lane.indices.push_back(static_cast<int>(i));
    lane.longest = std::max(lane.longest, ops[i].dur);
  }

  for (const auto& [id, send] : sends) {
    auto receive = receives.find(id);
    if (receive == receives.end()) {
      ++timeline.unmatched_flow_ends;
      continue;
    }
    Message message{id, send.first, receive->second.first, send.second, receive->second.second};
    message.send = enclosing(by_lane, ops, message.sender, message.sent);
    message.recv = enclosing(by_lane, ops, message.receiver, message.received);
    timeline.messages.push_back(std::move(message));
  }
  for (const auto& [id, receive] : receives)
    if (!sends.count(id)) ++timeline.unmatched_flow_ends;
  std::stable_sort(timeline.messages.begin(), timeline.messages.end(),
                   [](const Message& a, const Message& b) { return a.sent < b.sent; });
  std::stable_sort(timeline.failures.begin(), timeline.failures.end(),
                   [](const Failure& a, const Failure& b) { return a.ts < b.ts; });
  return timeline;
}

std::string thread_name(const Timeline& timeline, Lane lane) {
  auto it = timeline.thread_names.find(lane);
  if (it != timeline.thread_names.end() && !it->second.empty()) return it->second;
  return "tid " + std::to_string(lane.second);
}

}  // namespace rankmesh::tool
