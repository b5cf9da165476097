// `rankmesh trace report`: a timeline's figures as markdown (docs/trace.md defines each one).
#pragma once

#include <string>

#include "trace_file.hpp"

namespace rankmesh::tool {

// Per operation and group: count, bytes, latency p50/p99; per collective group: entry skew
// p50/p99 and the rank that arrived last most often; per p2p pair: the receiver's wait for its
// sender; failures.
std::string trace_report(const Timeline& timeline);

}  // namespace rankmesh::tool
