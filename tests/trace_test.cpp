// Timeline traces (issue 13): an embedded world with a trace directory writes one Chrome
// trace-event file per rank that holds every operation of a scripted run, pairs each
// point-to-point send with its receive, marks failures, and keeps within its bounds.
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "rankmesh/error.hpp"
#include "rankmesh/rankmesh.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// A fresh directory, removed with everything in it at the end.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char name[] = "/tmp/rankmesh-trace-XXXXXX";
    path = ::mkdtemp(name);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), path.string());
  return json::parse(in);  // throws on invalid JSON
}

// Counts of complete events by operation name.
std::map<std::string, int> operations(const json& trace) {
  std::map<std::string, int> counts;
  for (const json& e : trace["traceEvents"])
    if (e["ph"] == "X") ++counts[e["name"].get<std::string>()];
  return counts;
}

Tensor filled(std::int64_t n, float value) {
  Tensor t = Tensor::empty({n}, DType::f32);
  for (std::int64_t i = 0; i < n; ++i) t.data_as<float>()[i] = value;
  return t;
}

// Runs `body(rank, state)` on every rank of an embedded world, one thread each.
template <class Body>
void run_world(Runtime& runtime, Body body) {
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<std::size_t>(runtime.world_size()));
  for (int r = 0; r < runtime.world_size(); ++r)
    threads.emplace_back([&, r] {
      try {
        body(r, runtime.rank(r));
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (const std::string& e : errors) CHECK_MESSAGE(e.empty(), e);
}

}  // namespace

TEST_CASE("trace: every operation of a scripted run is in the ranks' files, and each send's flow "
          "ends at its receive, later") {
  TempDir dir;
  {
    RuntimeOptions options;
    options.world_size = 2;
    options.trace_dir = dir.path.string();
    Runtime runtime(options);
    run_world(runtime, [](int rank, ParallelState& state) {
      GroupCoordinator& world = state.world();
      for (std::int64_t step = 0; step < 3; ++step) {
        if (rank == 0) {
          world.send_tensor_dict(TensorDict{{"x", filled(8, 1)}, {"step", step}}, 1);
        } else {
          world.recv_tensor_dict(0);
        }
      }
      world.all_reduce(filled(16, 1));
      world.all_reduce(filled(16, 2));
      world.broadcast_object(rank == 0 ? Value("hello") : Value(None{}), 0);
    });
  }  // shutdown writes the files
  const json r0 = read_json(dir.path / "rank-0.trace.json");
  const json r1 = read_json(dir.path / "rank-1.trace.json");
  CHECK(r0["otherData"]["rankmesh_trace"] == 1);
  CHECK(r0["otherData"]["reason"] == "shutdown");
  CHECK(r1["otherData"]["rank"] == 1);
  CHECK(r0["otherData"]["dropped"] == 0);
  const auto ops0 = operations(r0), ops1 = operations(r1);
  CHECK(ops0.at("send_tensor_dict") == 3);
  CHECK(ops1.at("recv_tensor_dict") == 3);
  CHECK(ops0.at("all_reduce") == 2);
  CHECK(ops1.at("all_reduce") == 2);
  CHECK(ops0.at("broadcast_object") == 1);
  CHECK(ops1.at("broadcast_object") == 1);
  // Every complete event has what the format promises.
  for (const json* trace : {&r0, &r1})
    for (const json& e : (*trace)["traceEvents"]) {
      if (e["ph"] != "X") continue;
      CHECK(e["dur"].get<double>() >= 0);
      CHECK(e["args"].contains("group"));
      CHECK(e["args"]["transport"] == "inproc");
      if (e["name"] == "all_reduce") {
        CHECK(e["cat"] == "collective");
        CHECK(e["args"]["peers"].size() == 1);
      }
    }
  // Flows: each send's start has its finish at the receiver, not before it (one host, one clock).
  std::map<std::string, double> starts, finishes;
  for (const json& e : r0["traceEvents"])
    if (e["ph"] == "s") starts[e["id"]] = e["ts"].get<double>();
  for (const json& e : r1["traceEvents"])
    if (e["ph"] == "f") finishes[e["id"]] = e["ts"].get<double>();
  CHECK(starts.size() == 3);
  CHECK(finishes.size() == 3);
  for (const auto& [id, ts] : starts) {
    REQUIRE_MESSAGE(finishes.count(id) == 1, id);
    CHECK(ts <= finishes[id]);
  }
  // Collectives pair by (group_id, seq) across ranks.
  std::set<std::pair<std::uint32_t, std::int64_t>> collectives0, collectives1;
  for (const json& e : r0["traceEvents"])
    if (e["ph"] == "X" && e["cat"] == "collective")
      collectives0.insert({e["args"]["group_id"].get<std::uint32_t>(), e["args"]["seq"].get<std::int64_t>()});
  for (const json& e : r1["traceEvents"])
    if (e["ph"] == "X" && e["cat"] == "collective")
      collectives1.insert({e["args"]["group_id"].get<std::uint32_t>(), e["args"]["seq"].get<std::int64_t>()});
  CHECK(collectives0 == collectives1);
  CHECK(collectives0.size() == 3);
}

TEST_CASE("trace: a timeout is an instant on the timeline and the failed operation is marked") {
  TempDir dir;
  RuntimeOptions options;
  options.world_size = 2;
  options.trace_dir = dir.path.string();
  Runtime runtime(options);
  GroupCoordinator& world = runtime.rank(1).world();
  world.set_timeout(100ms);
  CHECK_THROWS_AS(world.recv_tensor_dict(0), Error);
  const json trace = read_json(runtime.rank(1).flush_trace());
  CHECK(trace["otherData"]["reason"] == "flush");
  bool instant = false, failed = false;
  for (const json& e : trace["traceEvents"]) {
    instant = instant || (e["ph"] == "i" && e["name"] == "timeout");
    failed = failed || (e["ph"] == "X" && e["name"] == "recv_tensor_dict" &&
                        e["args"].value("error", "").find("did not come") != std::string::npos);
  }
  CHECK(instant);
  CHECK(failed);
}

TEST_CASE("trace: the ring keeps the last operations and counts the dropped; recording switches "
          "off and on at run time; dumps rotate") {
  TempDir dir;
  RuntimeOptions options;
  options.world_size = 1;
  options.trace_dir = dir.path.string();
  options.trace_events = 4;
  Runtime runtime(options);
  ParallelState& state = runtime.rank(0);
  CHECK(state.tracing());
  for (int i = 0; i < 10; ++i) state.world().barrier();
  json trace = read_json(state.flush_trace());
  CHECK(operations(trace).at("barrier") == 4);
  CHECK(trace["otherData"]["recorded"] == 10);
  CHECK(trace["otherData"]["dropped"] == 6);
  state.set_tracing(false);
  for (int i = 0; i < 5; ++i) state.world().barrier();
  CHECK(read_json(state.flush_trace())["otherData"]["recorded"] == 10);
  state.set_tracing(true);
  state.world().barrier();
  CHECK(read_json(state.flush_trace())["otherData"]["recorded"] == 11);
  for (int i = 0; i < 10; ++i) state.dump_trace();
  int dumps = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path))
    dumps += entry.path().filename().string().find(".dump-") != std::string::npos;
  CHECK(dumps == 8);
  CHECK(std::filesystem::exists(dir.path / "rank-0.dump-9.trace.json"));
  CHECK_FALSE(std::filesystem::exists(dir.path / "rank-0.dump-1.trace.json"));
}

TEST_CASE("trace: without a directory nothing is recorded and flush_trace says why") {
  RuntimeOptions options;
  options.world_size = 1;
  Runtime runtime(options);
  ParallelState& state = runtime.rank(0);
  CHECK_FALSE(state.tracing());
  state.world().barrier();
  try {
    state.flush_trace();
    FAIL("flush_trace without a directory");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::invalid_argument);
    CHECK(std::string(e.what()).find("RANKMESH_TRACE") != std::string::npos);
  }
}

TEST_CASE("trace: SIGUSR2 makes a tracing process dump its ranks' rings into rotating files") {
  TempDir dir;
  RuntimeOptions options;
  options.world_size = 2;
  options.trace_dir = dir.path.string();
  Runtime runtime(options);
  run_world(runtime, [](int, ParallelState& state) { state.world().barrier(); });
  REQUIRE(std::raise(SIGUSR2) == 0);
  // A thread of the runtime's writes the dumps; wait for both (bounded).
  const auto until = std::chrono::steady_clock::now() + 10s;
  auto dumped = [&](int rank) {
    return std::filesystem::exists(dir.path / ("rank-" + std::to_string(rank) + ".dump-0.trace.json"));
  };
  while (!(dumped(0) && dumped(1)) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  REQUIRE(dumped(0));
  REQUIRE(dumped(1));
  const json dump = read_json(dir.path / "rank-1.dump-0.trace.json");
  CHECK(dump["otherData"]["reason"] == "signal");
  CHECK(operations(dump).at("barrier") == 1);
}
