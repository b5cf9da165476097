#include "trace_merge.hpp"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <map>
#include <optional>
#include <string_view>

#include "arguments.hpp"

namespace rankmesh::tool {

using nlohmann::json;

namespace {

// R of a file named rank-<R>.trace.json; nullopt for any other name (dumps, merged traces).
std::optional<int> rank_of(const std::string& name) {
  constexpr std::string_view kPrefix = "rank-", kSuffix = ".trace.json";
  if (name.size() <= kPrefix.size() + kSuffix.size() || name.rfind(kPrefix, 0) != 0 ||
      name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
    return std::nullopt;
  std::string_view digits(name.data() + kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
  int rank = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), rank);
  if (digits[0] < '0' || digits[0] > '9' || ec != std::errc() || end != digits.data() + digits.size())
    return std::nullopt;
  return rank;
}

}  // namespace

json merge_trace_files(std::vector<TraceFile> files) {
  json events = json::array(), ranks = json::array();
  std::vector<std::pair<double, std::size_t>> order;  // (world ts, index in `timed`)
  std::vector<json> timed;
  double clock_error_us = 0;
  for (TraceFile& file : files) {
    const json& other = file.document["otherData"];
    double offset = other["clock_offset_us"];
    clock_error_us = std::max(clock_error_us, other["clock_error_us"].get<double>());
    ranks.push_back(other);
    for (json& event : file.document["traceEvents"]) {
      if (event["ph"] == "M") {
        events.push_back(std::move(event));
        continue;
      }
      double ts = event["ts"].get<double>() + offset;
      event["ts"] = ts;
      order.emplace_back(ts, timed.size());
      timed.push_back(std::move(event));
    }
  }
  // Stable: events of one lane with equal ts keep the recorder's order.
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [ts, index] : order) events.push_back(std::move(timed[index]));
  json other = {{"rankmesh_trace", kTraceVersion},
                {"world_size", files.empty() ? json(0) : files[0].document["otherData"]["world_size"]},
                {"clock_error_us", clock_error_us},
                {"ranks", std::move(ranks)}};
  std::string unit = files.empty() ? "ns" : files[0].document.value("displayTimeUnit", "ns");
  return {{"displayTimeUnit", unit}, {"otherData", std::move(other)}, {"traceEvents", std::move(events)}};
}

json merge_trace_directory(const std::string& dir, bool partial) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw UsageError("'" + dir + "' is not a directory");
  std::map<int, TraceFile> by_rank;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    std::optional<int> rank = rank_of(entry.path().filename().string());
    if (!rank) continue;
    TraceFile file = read_trace_file(entry.path().string());
    if (file.merged) throw UsageError(file.path + ": a merged trace, not a rank's file");
    const json& other = file.document["otherData"];
    if (other["rank"] != *rank)
      throw UsageError(file.path + ": otherData.rank is " + other["rank"].dump() + ", the name says " +
                       std::to_string(*rank));
    const json& events = file.document["traceEvents"];
    for (std::size_t i = 0; i < events.size(); ++i)
      if (events[i]["pid"] != *rank)
        throw UsageError(file.path + ": event " + std::to_string(i) + " has pid " +
                         events[i]["pid"].dump() + " in rank " + std::to_string(*rank) + "'s file");
    by_rank.emplace(*rank, std::move(file));
  }
  if (by_rank.empty()) throw UsageError("no rank-<R>.trace.json files in '" + dir + "'");

  const TraceFile& first = by_rank.begin()->second;
  int world_size = first.document["otherData"]["world_size"];
  json missing = json::array();
  for (const auto& [rank, file] : by_rank) {
    int size = file.document["otherData"]["world_size"];
    if (size != world_size)
      throw UsageError(file.path + ": world_size " + std::to_string(size) + ", but " + first.path +
                       " has " + std::to_string(world_size));
    if (rank >= world_size)
      throw UsageError(file.path + ": rank " + std::to_string(rank) + " outside a world of " +
                       std::to_string(world_size));
  }
  for (int rank = 0; rank < world_size; ++rank) {
    if (by_rank.count(rank)) continue;
    if (!partial)
      throw UsageError("rank " + std::to_string(rank) + "'s file " +
                       (fs::path(dir) / ("rank-" + std::to_string(rank) + ".trace.json")).string() +
                       " is missing (world_size " + std::to_string(world_size) +
                       "); --partial merges the others");
    missing.push_back(rank);
  }
  std::vector<TraceFile> files;
  for (auto& [rank, file] : by_rank) files.push_back(std::move(file));
  json merged = merge_trace_files(std::move(files));
  if (!missing.empty()) merged["otherData"]["missing_ranks"] = std::move(missing);
  return merged;
}

std::string trace_text(const json& document) {
  std::string text = "{\"displayTimeUnit\":" + document["displayTimeUnit"].dump() +
                     ",\n\"otherData\":" + document["otherData"].dump() + ",\n\"traceEvents\":[";
  const json& events = document["traceEvents"];
  for (std::size_t i = 0; i < events.size(); ++i) text += (i ? ",\n" : "\n") + events[i].dump();
  return text + "\n]}\n";
}

}  // namespace rankmesh::tool
