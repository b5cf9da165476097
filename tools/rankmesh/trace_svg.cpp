#include "trace_svg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "arguments.hpp"

namespace rankmesh::tool {
namespace {

// Geometry, in pixels.
constexpr double kWidth = 1400, kLabelWidth = 150, kRightMargin = 30;
constexpr double kTop = 56, kLaneHeight = 26, kBarHeight = 18, kAxisHeight = 46, kLegendRow = 20;
constexpr double kPlotWidth = kWidth - kLabelWidth - kRightMargin;

// Collectives in cool colours, point-to-point in warm ones; names take them in sorted order.
constexpr const char* kCollectiveColours[] = {"#1f77b4", "#2ca02c", "#17becf", "#9467bd",
                                              "#4e79a7", "#59a14f", "#76b7b2", "#6b6ecf"};
constexpr const char* kP2pColours[] = {"#ff7f0e", "#bcbd22", "#e377c2", "#8c564b", "#f2b447", "#d62728"};

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", value);
  return text;
}

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A unit for the window's span and a tick step of 1, 2 or 5 times a power of ten in µs.
struct Axis {
  const char* unit;
  double unit_us;
  double step_us;
};

Axis axis_for(double span_us) {
  Axis axis{"µs", 1.0, 1.0};
  if (span_us >= 2e6) axis = {"s", 1e6, 1.0};
  else if (span_us >= 2e3) axis = {"ms", 1e3, 1.0};
  double rough = span_us / 8;
  double power = std::pow(10.0, std::floor(std::log10(rough)));
  for (double factor : {1.0, 2.0, 5.0, 10.0}) {
    axis.step_us = factor * power;
    if (axis.step_us >= rough) break;
  }
  return axis;
}

// A time since the trace's first event in the axis's unit, for the title and the note.
std::string time_text(double us, const Axis& axis) {
  char text[48];
  std::snprintf(text, sizeof text, "+%.4g %s", us / axis.unit_us, axis.unit);
  return text;
}

std::string time_label(double us, const Axis& axis) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", std::round(us / axis.step_us) * axis.step_us / axis.unit_us);
  return text;
}

struct Picture {
  const Timeline& timeline;
  double from, to;  // absolute µs on the world's time line
  std::map<Lane, int> lane_index;
  std::map<std::string, std::string> colours;  // by operation name
  std::set<std::string> p2p_names;

  double x(double ts) const { return kLabelWidth + (ts - from) / (to - from) * kPlotWidth; }
  double lane_top(Lane lane) const { return kTop + lane_index.at(lane) * kLaneHeight; }
  double lane_middle(Lane lane) const { return lane_top(lane) + kLaneHeight / 2; }
};

void assign_colours(Picture& picture) {
  std::set<std::string> collectives, p2p;
  for (const Operation& op : picture.timeline.operations) (op.p2p ? p2p : collectives).insert(op.name);
  std::size_t i = 0;
  for (const std::string& name : collectives)
    picture.colours[name] = kCollectiveColours[i++ % std::size(kCollectiveColours)];
  i = 0;
  for (const std::string& name : p2p) picture.colours[name] = kP2pColours[i++ % std::size(kP2pColours)];
  picture.p2p_names = std::move(p2p);
}

std::string lane_label(const Timeline& timeline, Lane lane) {
  bool several = std::count_if(timeline.lanes.begin(), timeline.lanes.end(),
                               [&](Lane other) { return other.first == lane.first; }) > 1;
  std::string label = "rank " + std::to_string(lane.first);
  return several ? label + " " + thread_name(timeline, lane) : label;
}

// Failed operations get a black outline; others a thin white one, so that back-to-back
// operations of one colour stay apart, except those too narrow to keep any fill inside it.
std::string outline(const Operation& op, double width) {
  if (op.error) return " stroke=\"#000000\" stroke-width=\"2\"";
  return width >= 3 ? " stroke=\"#ffffff\" stroke-width=\"0.6\"" : "";
}

void draw_lanes(std::string& svg, const Picture& picture, const std::vector<const Operation*>& ops) {
  std::map<Lane, std::vector<const Operation*>> by_lane;
  for (const Operation* op : ops) by_lane[op->lane].push_back(op);
  for (Lane lane : picture.timeline.lanes) {
    double top = picture.lane_top(lane);
    svg += "<g class=\"lane\" data-rank=\"" + std::to_string(lane.first) + "\" data-tid=\"" +
           std::to_string(lane.second) + "\">\n";
    svg += "<rect x=\"0\" y=\"" + number(top) + "\" width=\"" + number(kWidth) + "\" height=\"" +
           number(kLaneHeight) + "\" fill=\"" + (picture.lane_index.at(lane) % 2 ? "#ffffff" : "#f3f3f3") +
           "\"/>\n";
    svg += "<text class=\"lane-label\" x=\"8\" y=\"" + number(top + kLaneHeight / 2 + 4) + "\">" +
           escape(lane_label(picture.timeline, lane)) + "</text>\n";
    svg += "<g clip-path=\"url(#plot)\">\n";
    for (const Operation* op : by_lane[lane]) {
      double left = picture.x(op->start);
      double width = std::max(0.5, picture.x(op->start + op->dur) - left);  // a blip stays visible
      svg += "<rect class=\"op\" x=\"" + number(left) + "\" y=\"" +
             number(top + (kLaneHeight - kBarHeight) / 2) + "\" width=\"" + number(width) +
             "\" height=\"" + number(kBarHeight) + "\" fill=\"" + picture.colours.at(op->name) + "\"" +
             outline(*op, width) + "><title>" +
             escape(op->name + " " + op->group + " seq " + std::to_string(op->seq) + ", " +
                    std::to_string(op->bytes) + " B, " + number(op->dur) + " µs" +
                    (op->transport.empty() ? "" : ", " + op->transport) +
                    (op->error ? ", failed: " + *op->error : "")) +
             "</title></rect>\n";
    }
    svg += "</g>\n</g>\n";
  }
}

void draw_flows_and_failures(std::string& svg, const Picture& picture) {
  svg += "<g clip-path=\"url(#plot)\">\n";
  for (const Message& message : picture.timeline.messages) {
    if (message.received < picture.from || message.sent > picture.to) continue;
    svg += "<line class=\"flow\" x1=\"" + number(picture.x(message.sent)) + "\" y1=\"" +
           number(picture.lane_middle(message.sender)) + "\" x2=\"" +
           number(picture.x(message.received)) + "\" y2=\"" +
           number(picture.lane_middle(message.receiver)) +
           "\" stroke=\"#333333\" stroke-opacity=\"0.7\" marker-end=\"url(#arrow)\"><title>" +
           escape("message " + message.id) + "</title></line>\n";
  }
  for (const Failure& failure : picture.timeline.failures) {
    if (failure.ts < picture.from || failure.ts > picture.to) continue;
    double x = picture.x(failure.ts), top = picture.lane_top(failure.lane);
    svg += "<path class=\"failure\" d=\"M" + number(x) + " " + number(top + 2) + " l6 10 l-12 0 z\" "
           "fill=\"#d00000\"><title>" +
           escape(failure.name + (failure.message.empty() ? "" : ": " + failure.message)) +
           "</title></path>\n";
  }
  svg += "</g>\n";
}

void draw_axis(std::string& svg, const Picture& picture, double top) {
  Axis axis = axis_for(picture.to - picture.from);
  double origin = picture.timeline.begin;
  svg += "<g class=\"axis\">\n<line x1=\"" + number(kLabelWidth) + "\" y1=\"" + number(top) +
         "\" x2=\"" + number(kLabelWidth + kPlotWidth) + "\" y2=\"" + number(top) +
         "\" stroke=\"#000000\"/>\n";
  double first = std::ceil((picture.from - origin) / axis.step_us) * axis.step_us + origin;
  for (double tick = first; tick <= picture.to + axis.step_us * 1e-9; tick += axis.step_us) {
    double x = picture.x(tick);
    svg += "<line x1=\"" + number(x) + "\" y1=\"" + number(kTop) + "\" x2=\"" + number(x) +
           "\" y2=\"" + number(top + 5) + "\" stroke=\"#000000\" stroke-opacity=\"0.12\"/>\n";
    svg += "<text class=\"tick\" x=\"" + number(x) + "\" y=\"" + number(top + 18) +
           "\" text-anchor=\"middle\">" + time_label(tick - origin, axis) + "</text>\n";
  }
  svg += "<text x=\"" + number(kLabelWidth + kPlotWidth / 2) + "\" y=\"" + number(top + 36) +
         "\" text-anchor=\"middle\">time since the trace's first event (" + axis.unit + ")</text>\n";
  svg += "</g>\n";
}

// The legend's entries flow left to right and wrap; returns the height it took.
double draw_legend(std::string& svg, const Picture& picture, double top) {
  struct Entry {
    std::string kind, label, colour;
  };
  std::vector<Entry> entries;
  for (bool p2p : {false, true})
    for (const auto& [name, colour] : picture.colours)
      if (picture.p2p_names.count(name) == (p2p ? 1u : 0u))
        entries.push_back({"op", name + (p2p ? " (p2p)" : " (collective)"), colour});
  entries.push_back({"flow", "message: send to receive", "#333333"});
  entries.push_back({"failure", "failure (timeout, peer failure, abort, mismatch)", "#d00000"});
  entries.push_back({"failed", "failed operation (outlined)", "#ffffff"});
  svg += "<g class=\"legend\">\n";
  double x = kLabelWidth, y = top;
  for (const Entry& entry : entries) {
    double width = 30 + 7.0 * static_cast<double>(entry.label.size());
    if (x + width > kWidth - kRightMargin && x > kLabelWidth) x = kLabelWidth, y += kLegendRow;
    if (entry.kind == "flow")
      svg += "<line x1=\"" + number(x) + "\" y1=\"" + number(y + 6) + "\" x2=\"" + number(x + 18) +
             "\" y2=\"" + number(y + 6) + "\" stroke=\"#333333\" marker-end=\"url(#arrow)\"/>\n";
    else if (entry.kind == "failure")
      svg += "<path d=\"M" + number(x + 7) + " " + number(y) + " l6 10 l-12 0 z\" fill=\"#d00000\"/>\n";
    else
      svg += "<rect x=\"" + number(x) + "\" y=\"" + number(y) + "\" width=\"18\" height=\"12\" fill=\"" +
             entry.colour + "\"" + (entry.kind == "failed" ? " stroke=\"#000000\" stroke-width=\"2\"" : "") +
             "/>\n";
    svg += "<text x=\"" + number(x + 24) + "\" y=\"" + number(y + 11) + "\">" + escape(entry.label) +
           "</text>\n";
    x += width;
  }
  svg += "</g>\n";
  return y + kLegendRow - top;
}

}  // namespace

std::string trace_svg(const Timeline& timeline, const SvgOptions& options) {
  Picture picture{timeline, timeline.begin + options.from_us.value_or(0),
                  options.to_us ? timeline.begin + *options.to_us : timeline.end, {}, {}, {}};
  if (options.from_us && options.to_us && *options.to_us <= *options.from_us)
    throw UsageError("--to must be after --from");
  if (picture.to <= picture.from) picture.to = picture.from + 1;  // an empty or instant trace

  std::vector<const Operation*> ops;
  for (const Operation& op : timeline.operations)
    if (op.start <= picture.to && op.start + op.dur >= picture.from) ops.push_back(&op);
  std::string note;
  if (ops.size() > static_cast<std::size_t>(options.max_operations)) {
    // The window's first operations, and the window cut where they end: a complete picture of
    // a shorter time rather than a sparse one of the whole.
    std::size_t total = ops.size();
    picture.to = ops[options.max_operations]->start;
    ops.resize(options.max_operations);
    note = "Showing the first " + std::to_string(ops.size()) + " of " + std::to_string(total) +
           " operations in the window (up to " +
           time_text(picture.to - timeline.begin, axis_for(picture.to - picture.from)) +
           "); choose a window with --from/--to or raise --max-ops.";
  }
  for (std::size_t i = 0; i < timeline.lanes.size(); ++i) picture.lane_index[timeline.lanes[i]] = static_cast<int>(i);
  assign_colours(picture);

  double lanes_bottom = kTop + static_cast<double>(timeline.lanes.size()) * kLaneHeight;
  std::string body;
  draw_lanes(body, picture, ops);
  draw_flows_and_failures(body, picture);
  draw_axis(body, picture, lanes_bottom + 6);
  double legend_height = draw_legend(body, picture, lanes_bottom + kAxisHeight + 8);
  double height = lanes_bottom + kAxisHeight + 8 + legend_height + 8;

  std::string svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + number(kWidth) +
                    "\" height=\"" + number(height) + "\" viewBox=\"0 0 " + number(kWidth) + " " +
                    number(height) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  svg += "<defs>\n<marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"6\" "
         "markerHeight=\"6\" orient=\"auto-start-reverse\"><path d=\"M0 0 L10 5 L0 10 z\" "
         "fill=\"#333333\"/></marker>\n<clipPath id=\"plot\"><rect x=\"" + number(kLabelWidth) +
         "\" y=\"0\" width=\"" + number(kPlotWidth) + "\" height=\"" + number(height) +
         "\"/></clipPath>\n</defs>\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  Axis axis = axis_for(picture.to - picture.from);
  std::string window = time_text(picture.from - timeline.begin, axis) + " to " +
                       time_text(picture.to - timeline.begin, axis);
  svg += "<text x=\"8\" y=\"20\" font-size=\"15\" font-weight=\"bold\">rankmesh timeline: world of " +
         timeline.other_data["world_size"].dump() + " ranks, " + window + "</text>\n";
  if (!note.empty()) svg += "<text class=\"note\" x=\"8\" y=\"40\" fill=\"#b00000\">" + escape(note) + "</text>\n";
  return svg + body + "</svg>\n";
}

}  // namespace rankmesh::tool
