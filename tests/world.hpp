// Test support: runs one engine thread per rank of an in-process Runtime, its ranks joined by
// inproc channels or, for tests that run over every transport, by shm or tcp:
//   TEST_CASE_TEMPLATE("...", Over, RANKMESH_EVERY_TRANSPORT) { run_world<Over>(2, ...); }
#pragma once

#include <doctest/doctest.h>

#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "rankmesh/runtime.hpp"

namespace rankmesh::test {

// How an embedded world's ranks are joined (RuntimeOptions::transport).
struct OverInproc {
  static constexpr const char* transport = "auto";
};
struct OverShm {
  static constexpr const char* transport = "shm";
};
struct OverTcp {
  static constexpr const char* transport = "tcp";
};
#define RANKMESH_EVERY_TRANSPORT rankmesh::test::OverInproc, rankmesh::test::OverShm, rankmesh::test::OverTcp

template <class Over = OverInproc>
RuntimeOptions options_for(int world, int dp = 1) {
  RuntimeOptions options;
  options.world_size = world;
  options.data_parallel_size = dp;
  options.transport = Over::transport;
  options.log = [](const std::string&) {};
  return options;
}

// Calls fn(state) on its own thread for every rank; returns each rank's error text ("" if none).
inline std::vector<std::string> run_ranks(Runtime& runtime,
                                          const std::function<void(ParallelState&)>& fn) {
  std::vector<std::string> errors(static_cast<std::size_t>(runtime.world_size()));
  std::vector<std::thread> threads;
  for (int r = 0; r < runtime.world_size(); ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(runtime.rank(r));
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
        if (errors[static_cast<std::size_t>(r)].empty()) errors[static_cast<std::size_t>(r)] = "(empty error)";
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

inline std::vector<std::string> run_world(const std::function<void(ParallelState&)>& fn,
                                          RuntimeOptions options) {
  Runtime runtime(std::move(options));
  return run_ranks(runtime, fn);
}

template <class Over = OverInproc>
std::vector<std::string> run_world(int world, const std::function<void(ParallelState&)>& fn) {
  return run_world(fn, options_for<Over>(world));
}

inline bool all_ok(const std::vector<std::string>& errors) {
  for (const auto& e : errors)
    if (!e.empty()) return false;
  return true;
}

inline std::string joined(const std::vector<std::string>& errors) {
  std::string out;
  for (std::size_t r = 0; r < errors.size(); ++r)
    if (!errors[r].empty()) out += "rank " + std::to_string(r) + ": " + errors[r] + "\n";
  return out;
}

}  // namespace rankmesh::test

TYPE_TO_STRING_AS("inproc", rankmesh::test::OverInproc);
TYPE_TO_STRING_AS("shm", rankmesh::test::OverShm);
TYPE_TO_STRING_AS("tcp", rankmesh::test::OverTcp);
