// ParallelState: initialization agreed across ranks, accessors, destroy and re-initialize.
#include <doctest/doctest.h>

#include <mutex>

#include "rankmesh/error.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

TEST_CASE_TEMPLATE("initialize_model_parallel fails on every rank when one passes other sizes", Over, RANKMESH_EVERY_TRANSPORT) {
  auto errors = run_world<Over>(4, [](ParallelState& s) {
    s.initialize_model_parallel(s.rank() == 2 ? 4 : 2, s.rank() == 3 ? 4 : 2);
  });
  for (const auto& e : errors) {
    CAPTURE(e);
    CHECK(e.find("rank 2 passed tp 4, pp 2") != std::string::npos);  // the first that differs
    CHECK(e.find("rank 0 passed tp 2, pp 2") != std::string::npos);
  }
}

TEST_CASE_TEMPLATE("initialize, refuse a second initialize, ensure, destroy and initialize again", Over, RANKMESH_EVERY_TRANSPORT) {
  std::mutex mutex;
  std::vector<std::string> lines;
  RuntimeOptions options = options_for<Over>(4);
  options.log = [&](const std::string& line) {
    std::lock_guard lock(mutex);
    lines.push_back(line);
  };
  Runtime runtime(std::move(options));
  auto errors = run_ranks(runtime, [](ParallelState& s) {
    s.initialize_model_parallel(2, 2);
    if (!s.model_parallel_is_initialized()) throw std::runtime_error("not initialized");
    try {
      s.initialize_model_parallel(2, 2);
      throw std::runtime_error("second initialize accepted");
    } catch (const Error& e) {
      if (std::string(e.what()).find("called twice") == std::string::npos) throw;
    }
    s.ensure_model_parallel_initialized(2, 2);
    try {
      s.ensure_model_parallel_initialized(4, 1);
      throw std::runtime_error("ensure with other sizes accepted");
    } catch (const Error& e) {
      if (e.code() != Errc::mismatch) throw;
    }
    if (s.is_global_first_rank() != (s.rank() == 0)) throw std::runtime_error("global first");
    s.destroy_model_parallel();
    if (s.model_parallel_is_initialized()) throw std::runtime_error("still initialized");
    s.initialize_model_parallel(4, 1);
    if (s.tp().world_size() != 4) throw std::runtime_error("re-initialized tp size");
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  std::sort(lines.begin(), lines.end());
  CHECK(lines.size() == 8);  // once per rank per initialization
  CHECK(std::find(lines.begin(), lines.end(), "rank 3 of 4: DP 0, PP 1, TP 1, EP 1") != lines.end());
}

TEST_CASE_TEMPLATE("is_local_first_rank follows ranks per node", Over, RANKMESH_EVERY_TRANSPORT) {
  RuntimeOptions options = options_for<Over>(4);
  options.ranks_per_node = 2;
  Runtime runtime(std::move(options));
  for (int r = 0; r < 4; ++r) CHECK(runtime.rank(r).is_local_first_rank() == (r % 2 == 0));
}

TEST_CASE_TEMPLATE("impossible sizes fail with the numbers, on every rank", Over, RANKMESH_EVERY_TRANSPORT) {
  auto errors = run_world<Over>(4, [](ParallelState& s) { s.initialize_model_parallel(3); });
  for (const auto& e : errors) CHECK(e.find("4") != std::string::npos);
  for (const auto& e : errors) CHECK(e.find("3") != std::string::npos);
}

TEST_CASE_TEMPLATE("16 ranks (tp 4 x pp 4) run in one process", Over, RANKMESH_EVERY_TRANSPORT) {
  std::vector<float> sums(16);
  auto errors = run_world<Over>(16, [&](ParallelState& s) {
    s.initialize_model_parallel(4, 4);
    Tensor t = Tensor::empty({2}, DType::f32);
    t.data_as<float>()[0] = 1.0f;
    sums[s.rank()] = s.tp().all_reduce(s.pp().all_reduce(t)).data_as<float>()[0];
    s.world().barrier();
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (float v : sums) CHECK(v == 16.0f);
}
