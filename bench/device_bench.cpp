// rankmesh-device-bench: what CUDA tensors cost against host tensors, on the same runtime and
// the same patterns as `rankmesh bench` (tools/rankmesh/bench_patterns.cpp):
//   (b) dict_one_way: a dict of one 64 MiB float32 tensor from rank 0 to rank 1, which checks it
//       and acknowledges; timed on rank 0 until the acknowledgement is back (GB/s);
//   (d) all_gather of 16 MiB per rank, after an untimed barrier; per iteration the slowest
//       rank's time (ms).
// Each runs once with host tensors and once with CUDA tensors, in an embedded world of 2 ranks
// per transport named on the command line (inproc: device-to-device copies; shm: staged through
// host memory). The times include the data's arrival: the receiver waits on the received
// tensor's ready event before it acknowledges, a collective's result is waited on before the
// clock stops, since CUDA results return while their copies are still queued. Every result is
// checked on the host: its stamp or first and last elements each iteration, every byte of the
// last one. Scripts/gpu_check.sh runs it on the GPU host; without a GPU it says SKIP and exits 0.
//
//   rankmesh-device-bench [--transport inproc|shm]...   (default: both)
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "rankmesh/cuda_backend.hpp"
#include "rankmesh/device_backend.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/runtime.hpp"

namespace {

using namespace rankmesh;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t MiB = std::int64_t{1} << 20;
constexpr std::int64_t kDictBytes = 64 * MiB;
constexpr std::int64_t kGatherBytes = 16 * MiB;
constexpr int kWarmup = 2;
constexpr int kIterations = 10;
// A world still running after this is aborted: the whole program stays well within its step's
// budget in gpu_check.sh even when a transfer hangs.
constexpr std::chrono::seconds kWorldLimit{60};

[[noreturn]] void fail(const std::string& what) {
  throw Error(Errc::mismatch, "device bench: " + what);
}

double since_ns(Clock::time_point start) {
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Where a pattern's tensors live: the host or the GPU. Both are DeviceBackends, so the same code
// allocates, fills and reads back either; per rank its own stream for these copies.
struct Place {
  const char* name;  // "host", "cuda"
  DeviceBackend& backend;
};

// Blocks until `tensor`'s bytes are final (a CUDA result returns before its copies have run).
void wait_ready(const Tensor& tensor) {
  if (const auto& ready = tensor.ready_event()) ready->synchronize(default_timeout());
}

Tensor upload(Place place, Stream& stream, const std::vector<float>& values) {
  Tensor t = place.backend.allocate(Shape{static_cast<std::int64_t>(values.size())}, DType::f32);
  place.backend.copy_from_host(values.data(), t, stream)->synchronize(default_timeout());
  return t;
}

std::vector<float> download(Place place, Stream& stream, const Tensor& t) {
  std::vector<float> values(static_cast<std::size_t>(t.numel()));
  place.backend.copy_to_host(t, values.data(), stream)->synchronize(default_timeout());
  return values;
}

// The 4-byte words at both ends of `t`.
std::pair<std::int32_t, std::int32_t> ends(Place place, Stream& stream, const Tensor& t) {
  std::int32_t first = 0, last = 0;
  place.backend.copy_to_host(t, 0, &first, 4, stream);
  place.backend.copy_to_host(t, t.nbytes() - 4, &last, 4, stream)->synchronize(default_timeout());
  return {first, last};
}

std::int32_t bits(float f) {
  std::int32_t b = 0;
  std::memcpy(&b, &f, 4);
  return b;
}

// Values of the one-way dict: bench_patterns' filled(bytes, 5), the iteration stamped at both
// ends (a receiver that sees it got this iteration's bytes, not an earlier buffer's).
std::vector<float> dict_values(std::int32_t stamp) {
  static const std::vector<float> base = [] {  // made once: 16 Mi elements take a while
    std::vector<float> v(static_cast<std::size_t>(kDictBytes / 4));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = 5.0f + static_cast<float>(i % 1021);
    return v;
  }();
  std::vector<float> v = base;
  std::memcpy(v.data(), &stamp, 4);
  std::memcpy(v.data() + v.size() - 1, &stamp, 4);
  return v;
}

// (b) on rank 0: the median seconds per transfer, which every rank returns.
double one_way(ParallelState& s, Place place, Stream& stream) {
  GroupCoordinator& w = s.world();
  const std::string row = std::string("dict_one_way ") + place.name;
  const bool sender = w.rank_in_group() == 0;
  Tensor tensor = sender ? upload(place, stream, dict_values(-1)) : Tensor();
  const Device device = place.backend.device();
  Tensor last;
  std::vector<double> ns;
  for (std::int32_t i = 0; i < kWarmup + kIterations; ++i) {
    if (sender) {
      // Stamped before the clock starts; the previous transfer was acknowledged, so no copy
      // still reads these bytes.
      place.backend.copy_from_host(&i, 4, tensor, 0, stream);
      place.backend.copy_from_host(&i, 4, tensor, tensor.nbytes() - 4, stream)
          ->synchronize(default_timeout());
      const TensorDict dict{{"hidden_states", tensor}};  // an lvalue: copied, not donated
      const auto start = Clock::now();
      w.send_tensor_dict(dict, 1);
      const Value ack = w.recv_object(1);
      const double took = since_ns(start);
      if (ack != Value(i))
        fail(row + ": acknowledgement " + std::to_string(i) + " did not come back");
      if (i >= kWarmup) ns.push_back(took);
    } else {
      TensorDict got = w.recv_tensor_dict(0);
      const Tensor& t = got.at("hidden_states").as<Tensor>();
      if (t.device() != device)
        fail(row + ": sent from " + to_string(device) + ", received on " + to_string(t.device()));
      if (ends(place, stream, t) != std::pair{i, i})
        fail(row + ": iteration " + std::to_string(i) + " received stale bytes");
      w.send_object(Value(i), 0);
      last = t;
    }
  }
  if (!sender && download(place, stream, last) != dict_values(kWarmup + kIterations - 1))
    fail(row + ": the last 64 MiB received differ from those sent");
  Tensor result = Tensor::empty(Shape{1}, DType::f64);
  result.data_as<double>()[0] = sender ? median(ns) : 0.0;
  return w.all_reduce(result, ReduceOp::max).data_as<double>()[0] / 1e9;
}

// (d): the median over iterations of the slowest rank's seconds, which every rank returns.
double gather(ParallelState& s, Place place, Stream& stream) {
  GroupCoordinator& w = s.world();
  const std::string row = std::string("all_gather ") + place.name;
  const int n = w.world_size();
  const std::int64_t count = kGatherBytes / 4;
  auto value = [](std::int64_t rank, std::int64_t k) {  // bench_patterns' all_gather input
    return static_cast<float>(rank + 1) * static_cast<float>(1 + (k & 7));
  };
  std::vector<float> mine(static_cast<std::size_t>(count));
  for (std::int64_t k = 0; k < count; ++k)
    mine[static_cast<std::size_t>(k)] = value(w.rank_in_group(), k);
  const Tensor input = upload(place, stream, mine);
  const std::pair want_ends{bits(value(0, 0)), bits(value(n - 1, count - 1))};
  Tensor out;
  std::vector<double> ns;
  for (int i = 0; i < kWarmup + kIterations; ++i) {
    w.barrier();
    out = Tensor();  // the previous result goes before the clock starts
    const auto start = Clock::now();
    out = w.all_gather(input, 0);
    wait_ready(out);
    const double took = since_ns(start);
    if (out.device() != input.device() || out.numel() != count * n)
      fail(row + ": " + std::to_string(out.numel()) + " elements on " + to_string(out.device()) +
           ", expected " + std::to_string(count * n) + " on " + to_string(input.device()));
    if (ends(place, stream, out) != want_ends)
      fail(row + ": wrong first or last element in iteration " + std::to_string(i));
    if (i >= kWarmup) ns.push_back(took);
  }
  const std::vector<float> all = download(place, stream, out);
  for (std::int64_t k = 0; k < count * n; ++k)
    if (all[static_cast<std::size_t>(k)] != value(k / count, k % count))
      fail(row + ": wrong element " + std::to_string(k));
  Tensor times = Tensor::empty(Shape{static_cast<std::int64_t>(ns.size())}, DType::f64);
  std::memcpy(times.data(), ns.data(), ns.size() * sizeof(double));
  const Tensor slowest = w.all_reduce(times, ReduceOp::max);
  const double* p = slowest.data_as<double>();
  return median(std::vector<double>(p, p + ns.size())) / 1e9;
}

// Seconds per row and place ("dict_one_way"/"all_gather" -> "host"/"cuda" -> s), rank 0's.
using Results = std::map<std::string, std::map<std::string, double>>;

void run_rank(ParallelState& s, CudaBackend& cuda, Results& results) {
  const Place places[] = {{"host", host_backend()}, {"cuda", cuda}};
  for (const Place& place : places) {
    auto stream = place.backend.create_stream();
    const double one_way_s = one_way(s, place, *stream);
    const double gather_s = gather(s, place, *stream);
    if (s.rank() == 0) {
      results["dict_one_way"][place.name] = one_way_s;
      results["all_gather"][place.name] = gather_s;
    }
  }
}

// One embedded world of 2 ranks over `transport`; an empty string when every rank succeeded.
std::string run_world(const std::string& transport, CudaBackend& cuda, Results& results) {
  RuntimeOptions options;
  options.world_size = 2;
  options.transport = transport;
  options.backends = {&cuda};
  Runtime runtime(options);
  std::vector<std::string> errors(2);
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock lock(mutex);
    if (!finished.wait_for(lock, kWorldLimit, [&] { return done; }))
      runtime.abort("the device bench ran longer than " + std::to_string(kWorldLimit.count()) + " s");
  });
  std::vector<std::thread> threads;
  for (int r : runtime.local_ranks())
    threads.emplace_back([&, r] {
      try {
        run_rank(runtime.rank(r), cuda, results);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
        runtime.abort("rank " + std::to_string(r) + " failed: " + e.what());
      }
    });
  for (auto& t : threads) t.join();
  {
    std::lock_guard lock(mutex);
    done = true;
  }
  finished.notify_all();
  watchdog.join();
  for (std::size_t r = 0; r < errors.size(); ++r)
    if (!errors[r].empty()) return "rank " + std::to_string(r) + ": " + errors[r];
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> transports;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--transport" && i + 1 < argc && (std::string(argv[i + 1]) == "inproc" ||
                                                 std::string(argv[i + 1]) == "shm")) {
      transports.push_back(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: rankmesh-device-bench [--transport inproc|shm]...\n");
      return 2;
    }
  }
  if (transports.empty()) transports = {"inproc", "shm"};
  if (CudaBackend::device_count() == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", CudaBackend::unavailable_reason().c_str());
    return 0;
  }
  try {
    CudaBackend cuda;
    std::printf("%-22s %-9s %12s %12s %10s\n", "row", "transport", "host", "cuda", "cuda/host");
    for (const std::string& transport : transports) {
      Results results;
      const std::string error = run_world(transport, cuda, results);
      if (!error.empty()) {
        std::fprintf(stderr, "rankmesh-device-bench: %s: %s\n", transport.c_str(), error.c_str());
        return 1;
      }
      const double gbps_host = kDictBytes / results["dict_one_way"]["host"] / 1e9;
      const double gbps_cuda = kDictBytes / results["dict_one_way"]["cuda"] / 1e9;
      std::printf("%-22s %-9s %7.2f GB/s %7.2f GB/s %10.2f\n", "(b) dict_one_way 64MiB",
                  transport.c_str(), gbps_host, gbps_cuda, gbps_cuda / gbps_host);
      const double ms_host = results["all_gather"]["host"] * 1e3;
      const double ms_cuda = results["all_gather"]["cuda"] * 1e3;
      std::printf("%-22s %-9s %9.3f ms %9.3f ms %10.2f\n", "(d) all_gather 16MiB",
                  transport.c_str(), ms_host, ms_cuda, ms_cuda / ms_host);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rankmesh-device-bench: %s\n", e.what());
    return 1;
  }
  std::printf("device bench: every result checked\n");
  return 0;
}
