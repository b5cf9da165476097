// `rankmesh trace svg`: a timeline as a standalone SVG picture.
#pragma once

#include <optional>
#include <string>

#include "trace_file.hpp"

namespace rankmesh::tool {

struct SvgOptions {
  std::optional<double> from_us, to_us;  // the window, in µs since the trace's first event
  int max_operations = 5000;             // beyond this the picture shows the window's first ones
};

// One lane per rank and thread, operations as rectangles coloured by operation (collectives in
// cool colours, point-to-point in warm ones), an arrow per message, failures marked, a time axis
// and a legend.
std::string trace_svg(const Timeline& timeline, const SvgOptions& options);

}  // namespace rankmesh::tool
