// `rankmesh trace merge`: the ranks' trace files as one time line.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trace_file.hpp"

namespace rankmesh::tool {

// The files as one document: every ts moved by its file's clock_offset_us, all events kept,
// metadata first and then sorted by ts (so also per (pid, tid)), otherData.ranks holding each
// file's otherData and clock_error_us the largest of theirs.
nlohmann::json merge_trace_files(std::vector<TraceFile> files);

// DIR's rank-<R>.trace.json files (dumps are left out), one per rank of the world, merged. A
// missing rank is an error, or with `partial` listed in otherData.missing_ranks.
nlohmann::json merge_trace_directory(const std::string& dir, bool partial);

// A trace document as text, one event per line (diff- and grep-friendly, still one JSON object).
std::string trace_text(const nlohmann::json& document);

}  // namespace rankmesh::tool
