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
  double median = 0, p99 = 0, min = 0, max = 0;  // p99: of the times (GB/s: the 1% slowest)
  std::string unit;       // "us", "ms", "GB/s"; "% core" for parked_wait
  std::int64_t iterations = 0;
  double cpu_us = 0;      // CPU time (user + system) of all the world's processes per iteration
};

std::string to_json(const Measurement& m);

// The patterns, by name (the letters in brackets), by world size:
//   2 ranks:  dict_roundtrip (a), dict_one_way and dict_one_way_donated (b), all_gather,
//             all_reduce, reduce_scatter and broadcast (d), p2p_latency (f), p2p_donated (inproc
//             only), idle_wait (parked_wait, wait_1ms: what a wait costs in CPU)
//   4 ranks:  send_allgather (c: _auto, _sliced, _whole), all_gather, all_reduce, reduce_scatter
//             and broadcast (d), broadcast_object (e), dict_roundtrip_pairs (a, two pairs)
//   16 ranks: dict_roundtrip_pairs (a, eight pairs: oversubscribed on a small machine)
struct Settings {
  bool quick = false;           // tiny sizes, few iterations: proves each pattern runs
  std::set<std::string> only;   // pattern names; empty: all
  std::string transport;        // the label the measurements carry
  std::optional<std::chrono::microseconds> spin;  // RuntimeOptions::spin; default: the runtime's
  bool one_process = false;     // every rank in this process (inproc): its CPU counted once
  bool selected(const std::string& pattern) const { return only.empty() || only.count(pattern); }
};

// The pattern names a world of `ranks` runs under `settings` (empty: nothing to run).
std::vector<std::string> patterns_for(int ranks, const Settings& settings);

// Runs the selected patterns of this rank's world (2, 4 or 16 ranks) from its engine thread. Every
// rank must call it; on rank 0 `report` gets each measurement as soon as it is taken (so a later
// failure loses none). A wrong result throws rankmesh::Error(mismatch) naming the pattern.
void run_patterns(ParallelState& state, const Settings& settings,
                  const std::function<void(const Measurement&)>& report);

}  // namespace rankmesh::tool::bench
