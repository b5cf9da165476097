// `rankmesh bench`: the measured patterns, run by every rank of a world; rank 0 reports.
// The same patterns, measured the same way, are in bench/mpi_bench.cpp for OpenMPI.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace rankmesh {
class ParallelState;
}

namespace rankmesh::tool::bench {

// One measurement: a JSON object per line in the output.
struct Measurement {
  std::string name;       // "dict_roundtrip", "p2p_latency", ...
  std::string transport;  // inproc, shm, tcp
  int ranks = 2;
  std::int64_t size = 0;  // payload bytes
  double median = 0, min = 0, max = 0;
  std::string unit;       // "us", "ms", "GB/s"
  std::int64_t iterations = 0;
};

std::string to_json(const Measurement& m);

// The patterns, by name (the letters in brackets). A world of 2 ranks runs the first
// group, a world of 4 the second.
//   2 ranks: dict_roundtrip (a), dict_one_way and dict_one_way_donated (b), all_gather and
//            all_reduce (d), p2p_latency (f), p2p_donated (inproc only)
//   4 ranks: send_allgather (c: _auto, _sliced, _whole), all_gather and all_reduce (d),
//            broadcast_object (e)
struct Settings {
  bool quick = false;           // tiny sizes, few iterations: proves each pattern runs
  std::set<std::string> only;   // pattern names; empty: all
  std::string transport;        // the label the measurements carry
  std::optional<std::chrono::microseconds> spin;  // RuntimeOptions::spin; default: the runtime's
  bool selected(const std::string& pattern) const { return only.empty() || only.count(pattern); }
};

// The pattern names a world of `ranks` runs under `settings` (empty: nothing to run).
std::vector<std::string> patterns_for(int ranks, const Settings& settings);

// Runs the selected patterns of this rank's world (2 or 4 ranks) from its engine thread. Every
// rank must call it; on rank 0 `report` gets each measurement as soon as it is taken (so a later
// failure loses none). A wrong result throws rankmesh::Error(mismatch) naming the pattern.
void run_patterns(ParallelState& state, const Settings& settings,
                  const std::function<void(const Measurement&)>& report);

}  // namespace rankmesh::tool::bench
