#include "trace_report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>

namespace rankmesh::tool {
namespace {

// Nearest rank: the smallest value with at least p % of the values at or below it.
double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(values.size())));
  return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

std::string format(const char* pattern, double value) {
  char text[64];
  std::snprintf(text, sizeof text, pattern, value);
  return text;
}

std::string format_us(double us) {
  double magnitude = std::fabs(us);
  if (magnitude >= 1e6) return format("%.3g s", us / 1e6);
  if (magnitude >= 1e3) return format("%.3g ms", us / 1e3);
  return format("%.3g µs", us);
}

std::string format_bytes(long long bytes) {
  auto value = static_cast<double>(bytes);
  if (value >= 1024.0 * 1024 * 1024) return format("%.3g GiB", value / (1024.0 * 1024 * 1024));
  if (value >= 1024.0 * 1024) return format("%.3g MiB", value / (1024.0 * 1024));
  if (value >= 1024.0) return format("%.3g KiB", value / 1024.0);
  return std::to_string(bytes) + " B";
}

std::string lane_name(const Timeline& timeline, Lane lane) {
  return "rank " + std::to_string(lane.first) + " (" + thread_name(timeline, lane) + ")";
}

std::string escape_cell(std::string text) {
  for (std::size_t at = 0; (at = text.find_first_of("|\n", at)) != std::string::npos; at += 2)
    text.replace(at, 1, text[at] == '|' ? "\\|" : " ");
  return text;
}

void header(std::string& out, const Timeline& timeline) {
  const nlohmann::json& other = timeline.other_data;
  out += "# rankmesh trace report\n\n";
  out += "World of " + other["world_size"].dump() + " ranks; " + std::to_string(other["ranks"].size()) +
         " rank files merged";
  if (other.contains("missing_ranks")) out += " (missing ranks: " + other["missing_ranks"].dump() + ")";
  out += ". " + std::to_string(timeline.operations.size()) + " operations, " +
         std::to_string(timeline.messages.size()) + " point-to-point messages, " +
         std::to_string(timeline.failures.size()) + " failure event(s) over " +
         format_us(timeline.end - timeline.begin) + ".\n\n";
  out += "Clock: ranks' times are on one time line within ±" +
         format_us(other.value("clock_error_us", 0.0)) +
         " (the largest error bound of the ranks' clock offsets; 0 on one host).\n";
  for (const nlohmann::json& rank : other["ranks"])
    if (rank.value("dropped", 0LL) > 0)
      out += "Rank " + rank["rank"].dump() + "'s ring dropped its " + rank["dropped"].dump() +
             " oldest operations: figures before its first recorded one are partial.\n";
  if (timeline.unmatched_flow_ends > 0)
    out += std::to_string(timeline.unmatched_flow_ends) +
           " flow ends have no other end in the trace (dropped, or a rank's file missing).\n";
  out += "Percentiles are nearest-rank (p99 of fewer than 100 values is the largest).\n";
}

void operations(std::string& out, const Timeline& timeline) {
  struct Row {
    int count = 0, failed = 0;
    long long bytes = 0;
    std::vector<double> durations;
  };
  std::map<std::pair<std::string, std::string>, Row> rows;  // (group, operation)
  for (const Operation& op : timeline.operations) {
    Row& row = rows[{op.group, op.name}];
    ++row.count;
    row.failed += op.error ? 1 : 0;
    row.bytes += op.bytes;
    row.durations.push_back(op.dur);
  }
  out += "\n## Operations\n\nLatency is each operation's duration on its rank (the X event's dur).\n\n"
         "| group | operation | count | failed | bytes | latency p50 | latency p99 |\n"
         "|---|---|---:|---:|---:|---:|---:|\n";
  if (rows.empty()) out += "| (no operation recorded) | | | | | | |\n";
  for (const auto& [key, row] : rows)
    out += "| " + escape_cell(key.first) + " | " + escape_cell(key.second) + " | " +
           std::to_string(row.count) + " | " + std::to_string(row.failed) + " | " +
           format_bytes(row.bytes) + " | " + format_us(percentile(row.durations, 50)) + " | " +
           format_us(percentile(row.durations, 99)) + " |\n";
}

void entry_skew(std::string& out, const Timeline& timeline) {
  // Each member's entry into each collective, by (group_id, seq); a rank's first one counts.
  std::map<std::pair<long long, long long>, std::map<int, double>> entries;
  std::map<long long, std::string> group_names;
  for (const Operation& op : timeline.operations) {
    if (op.p2p) continue;
    entries[{op.group_id, op.seq}].emplace(op.lane.first, op.start);
    group_names.emplace(op.group_id, op.group);
  }
  struct Row {
    std::vector<double> skews;
    std::map<int, int> last_counts;  // rank -> collectives it entered last
  };
  std::map<std::string, Row> rows;  // by group name: a rebuilt group's incarnations together
  for (const auto& [key, by_rank] : entries) {
    if (by_rank.size() < 2) continue;
    double first = by_rank.begin()->second, last = first;
    int last_rank = by_rank.begin()->first, at_last = 0;
    for (const auto& [rank, start] : by_rank) first = std::min(first, start);
    for (const auto& [rank, start] : by_rank) {
      if (start > last) last = start, last_rank = rank, at_last = 0;
      if (start == last) ++at_last;
    }
    Row& row = rows[group_names[key.first]];
    row.skews.push_back(last - first);
    if (at_last == 1) ++row.last_counts[last_rank];  // a tie names nobody
  }
  out += "\n## Collective entry skew\n\nPer collective (group_id, seq) recorded on two or more "
         "ranks: the last member's entry (X start) minus the first's.\n\n"
         "| group | collectives | skew p50 | skew p99 | arrived last most often |\n"
         "|---|---:|---:|---:|---|\n";
  if (rows.empty()) out += "| (no collective recorded on two ranks) | | | | |\n";
  for (const auto& [group, row] : rows) {
    std::string last = "-";
    auto most = std::max_element(row.last_counts.begin(), row.last_counts.end(),
                                 [](const auto& a, const auto& b) { return a.second < b.second; });
    if (most != row.last_counts.end())
      last = "rank " + std::to_string(most->first) + " (" + std::to_string(most->second) + " of " +
             std::to_string(row.skews.size()) + ")";
    out += "| " + escape_cell(group) + " | " + std::to_string(row.skews.size()) + " | " +
           format_us(percentile(row.skews, 50)) + " | " + format_us(percentile(row.skews, 99)) +
           " | " + last + " |\n";
  }
}

void receiver_wait(std::string& out, const Timeline& timeline) {
  struct Row {
    std::vector<double> waits;
    int waited = 0;
  };
  std::map<std::tuple<std::string, int, int>, Row> rows;  // (group, src, dst)
  int without_operation = 0;
  for (const Message& message : timeline.messages) {
    if (message.send < 0 || message.recv < 0) {
      ++without_operation;
      continue;
    }
    const Operation& send = timeline.operations[message.send];
    const Operation& recv = timeline.operations[message.recv];
    double wait = std::max(0.0, send.start - recv.start);
    Row& row = rows[{recv.group, message.sender.first, message.receiver.first}];
    row.waits.push_back(wait);
    row.waited += wait > 0 ? 1 : 0;
  }
  out += "\n## Point-to-point: receiver waiting for the sender\n\nPer message (flow): "
         "max(0, the send's X start - the receive's X start), the time the receive had been "
         "waiting when its sender began to send; 0 when the send began first.\n\n"
         "| group | pair (src>dst) | messages | waited | wait p50 | wait p99 |\n"
         "|---|---|---:|---:|---:|---:|\n";
  if (rows.empty()) out += "| (no message with both operations recorded) | | | | | |\n";
  for (const auto& [key, row] : rows)
    out += "| " + escape_cell(std::get<0>(key)) + " | " + std::to_string(std::get<1>(key)) + ">" +
           std::to_string(std::get<2>(key)) + " | " + std::to_string(row.waits.size()) + " | " +
           std::to_string(row.waited) + " | " + format_us(percentile(row.waits, 50)) + " | " +
           format_us(percentile(row.waits, 99)) + " |\n";
  if (without_operation > 0)
    out += "\n" + std::to_string(without_operation) +
           " messages left out: a flow end lies in no recorded operation.\n";
}

void failures(std::string& out, const Timeline& timeline) {
  double t0 = timeline.begin;
  out += "\n## Failures\n\n";
  if (timeline.failures.empty()) out += "No failure events.\n";
  for (const Failure& failure : timeline.failures)
    out += "- at +" + format_us(failure.ts - t0) + ", " + lane_name(timeline, failure.lane) + ": " +
           failure.name + (failure.message.empty() ? "" : ": " + failure.message) + "\n";
  bool titled = false;
  for (const Operation& op : timeline.operations) {
    if (!op.error) continue;
    if (!titled) out += "\nFailed operations:\n\n";
    titled = true;
    out += "- at +" + format_us(op.start - t0) + ", " + lane_name(timeline, op.lane) + ": " +
           op.name + " on " + op.group + " (seq " + std::to_string(op.seq) + "): " + *op.error + "\n";
  }
}

}  // namespace

std::string trace_report(const Timeline& timeline) {
  std::string out;
  header(out, timeline);
  operations(out, timeline);
  entry_skew(out, timeline);
  receiver_wait(out, timeline);
  failures(out, timeline);
  return out;
}

}  // namespace rankmesh::tool
