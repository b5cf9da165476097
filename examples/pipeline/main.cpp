// rankmesh-pipeline: a small model split across pipeline stages, tensor-parallel inside each
// stage. Stages pass {"hidden_states", "residual", "step"} with send-allgather over the TP group;
// several microbatches are in flight so stages overlap. Run alone, every rank lives in this
// process; under `rankmesh launch` each process runs its one rank. The last line (of rank 0's
// process) is max_abs_diff=<value> against the same model computed on one rank (on the host).
// --device cuda keeps weights and activations on the GPU (device 0, shared by the process's
// ranks): the stages pass device tensors and all-reduce them, the math is kernels.cu's.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "host_compute.hpp"
#include "model.hpp"
#include "rank_compute.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/runtime.hpp"
#if RANKMESH_HAVE_CUDA
#include "cuda_compute.hpp"
#include "rankmesh/cuda_backend.hpp"
#endif

namespace {

using Clock = std::chrono::steady_clock;
using pipeline::Matrix;
using pipeline::ModelShape;

constexpr double kTolerance = 1e-4;
constexpr int kInFlight = 2;  // microbatches a stage may run ahead of the next one
constexpr auto kSlowBy = std::chrono::milliseconds(2);  // --slow-rank's delay per all_reduce

struct Options {
  int tp = 2;
  int pp = 2;
  int microbatches = 4;
  bool trace = false;
  int slow_rank = -1;  // a straggler on purpose: its TP all_reduces start kSlowBy late
  std::string device = "cpu";  // or "cuda"
  ModelShape model;
};

[[noreturn]] void usage(const std::string& problem) {
  std::fprintf(stderr, "rankmesh-pipeline: %s\n", problem.c_str());
  std::fprintf(stderr, "usage: rankmesh-pipeline [--tp N] [--pp N] [--microbatches N] [--layers N] "
                       "[--hidden N] [--seed N] [--slow-rank R] [--device cpu|cuda] [--trace]\n");
  std::exit(2);
}

// A run this build or machine cannot do (exit code 2, as for bad arguments, without the usage).
[[noreturn]] void refuse(const std::string& problem) {
  std::fprintf(stderr, "rankmesh-pipeline: %s\n", problem.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  std::map<std::string, int*> ints{{"--tp", &o.tp},
                                   {"--pp", &o.pp},
                                   {"--microbatches", &o.microbatches},
                                   {"--layers", &o.model.layers},
                                   {"--hidden", &o.model.hidden}};
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--trace") {
      o.trace = true;
      continue;
    }
    if (i + 1 >= argc) usage(flag + " needs a value");
    std::string text = argv[++i];
    if (flag == "--device") {
      if (text != "cpu" && text != "cuda")
        usage("--device must be cpu or cuda, got '" + text + "'");
      o.device = text;
      continue;
    }
    long long value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    const long long least = flag == "--slow-rank" ? 0 : 1;
    if (ec != std::errc() || end != text.data() + text.size() || value < least || value > (1 << 20))
      usage(flag + " must be an integer from " + std::to_string(least) + ", got '" + text + "'");
    if (flag == "--seed") {
      o.model.seed = static_cast<std::uint64_t>(value);
    } else if (flag == "--slow-rank") {
      o.slow_rank = static_cast<int>(value);
    } else if (auto it = ints.find(flag); it != ints.end()) {
      *it->second = static_cast<int>(value);
    } else {
      usage("unknown argument '" + flag + "'");
    }
  }
  o.model.ffn = 2 * o.model.hidden;
  if (o.model.ffn % o.tp != 0)
    usage("the inner size " + std::to_string(o.model.ffn) + " (2 x hidden) does not split into " +
          std::to_string(o.tp) + " TP shards");
  if (o.model.layers < o.pp)
    usage(std::to_string(o.model.layers) + " layers do not fill " + std::to_string(o.pp) + " stages");
  return o;
}

// A rank's compute for its layers [first, last) as TP rank `tp_rank`, on the chosen device.
using ComputeFactory =
    std::function<std::unique_ptr<pipeline::RankCompute>(int first, int last, int tp_rank)>;

// Events stamped in one global order, so the overlap test can check order rather than time.
class Trace {
public:
  void record(int stage, const char* what, int microbatch) {
    std::lock_guard lock(mutex_);
    lines_.push_back("trace: stage " + std::to_string(stage) + " " + what + " microbatch " +
                     std::to_string(microbatch));
  }
  void print() const {
    for (const auto& line : lines_) std::printf("%s\n", line.c_str());
  }

private:
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

struct RankReport {
  int stage = 0, tp_rank = 0, layers = 0;
  std::size_t weight_bytes = 0;
  int dicts_sent = 0, dicts_received = 0, acks = 0, all_reduces = 0;
  double compute_ms = 0, wait_ms = 0;
  double max_abs_diff = 0;  // over the whole world, against the one-rank reference
};

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void run_rank(rankmesh::ParallelState& state, const Options& o, const ComputeFactory& make_compute,
              Trace& trace, RankReport& report) {
  using namespace rankmesh;
  state.initialize_model_parallel(o.tp, o.pp);
  GroupCoordinator& tp = state.tp();
  GroupCoordinator& pp = state.pp();
  const ModelShape& m = o.model;
  const int stage = pp.rank_in_group();
  const int first_layer = stage * m.layers / o.pp, last_layer = (stage + 1) * m.layers / o.pp;
  report.stage = stage;
  report.tp_rank = tp.rank_in_group();
  report.layers = last_layer - first_layer;

  const std::unique_ptr<pipeline::RankCompute> compute =
      make_compute(first_layer, last_layer, tp.rank_in_group());
  report.weight_bytes = compute->weight_bytes();
  const bool first = pp.is_first_rank(), last = pp.is_last_rank();
  const int prev = pp.world_size() > 1 ? (stage + o.pp - 1) % o.pp : 0;
  const int next = (stage + 1) % o.pp;

  for (int mb = 0; mb < o.microbatches; ++mb) {
    Tensor hidden, residual;
    auto wait_start = Clock::now();
    if (first) {
      // Flow control: run at most kInFlight microbatches ahead of the next stage.
      if (!last && mb >= kInFlight) {
        pp.recv_object(next);
        ++report.acks;
      }
      compute->input(mb, hidden, residual);
    } else {
      if (!last && mb >= kInFlight) {
        pp.recv_object(next);
        ++report.acks;
      }
      TensorDict in = pp.recv_tensor_dict(prev, &tp);
      ++report.dicts_received;
      if (in.at("step").as<std::int64_t>() != mb)
        throw Error(Errc::mismatch, "stage " + std::to_string(stage) + " expected microbatch " +
                                        std::to_string(mb));
      hidden = in.at("hidden_states").as<Tensor>();
      residual = in.at("residual").as<Tensor>();
    }
    report.wait_ms += ms_since(wait_start);
    if (tp.rank_in_group() == 0) trace.record(stage, "starts", mb);
    if (!first) pp.send_object(Value(mb), prev);  // the credit for the previous stage

    auto compute_start = Clock::now();
    for (int layer = 0; layer < report.layers; ++layer) {
      Tensor partial = compute->layer(layer, hidden, residual);
      if (state.rank() == o.slow_rank) std::this_thread::sleep_for(kSlowBy);
      hidden = tp.all_reduce(partial);
      ++report.all_reduces;
    }
    report.compute_ms += ms_since(compute_start);
    if (tp.rank_in_group() == 0) trace.record(stage, "finishes", mb);

    if (!last) {
      TensorDict out{{"hidden_states", std::move(hidden)},
                     {"residual", std::move(residual)},
                     {"step", mb}};
      pp.send_tensor_dict(std::move(out), next, &tp);  // donated: its tensors are ours to give
      ++report.dicts_sent;
    } else {
      const Matrix got = compute->output(hidden, residual);
      const Matrix want = pipeline::reference(m, mb);
      for (std::size_t i = 0; i < want.size(); ++i)
        report.max_abs_diff =
            std::max(report.max_abs_diff, static_cast<double>(std::fabs(got[i] - want[i])));
    }
  }
  if (!last) {  // the credits still owed for the last microbatches
    for (int mb = std::max(0, o.microbatches - kInFlight); mb < o.microbatches; ++mb) {
      pp.recv_object(next);
      ++report.acks;
    }
  }
  compute->finish();
  // Every rank learns the worst difference, wherever the last stage runs.
  Tensor diff = Tensor::empty({1}, DType::f64);
  diff.data_as<double>()[0] = report.max_abs_diff;
  report.max_abs_diff = state.world().all_reduce(diff, ReduceOp::max).data_as<double>()[0];
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  const int world = o.tp * o.pp;
  rankmesh::RuntimeOptions options;
  options.world_size = world;
  options.log = [](const std::string& line) { std::printf("%s\n", line.c_str()); };

  ComputeFactory make_compute = [&o](int first, int last, int tp_rank) {
    return std::make_unique<pipeline::HostCompute>(o.model, first, last, tp_rank, o.tp);
  };
#if RANKMESH_HAVE_CUDA
  std::unique_ptr<rankmesh::CudaBackend> cuda;  // outlives the runtime, which uses it
#endif
  if (o.device == "cuda") {
#if RANKMESH_HAVE_CUDA
    if (rankmesh::CudaBackend::device_count() == 0)
      refuse("no CUDA device: " + rankmesh::CudaBackend::unavailable_reason());
    try {
      // Device 0 for every rank: the ranks of this process (and of the others on the node)
      // share the GPU host's one GPU.
      cuda = std::make_unique<rankmesh::CudaBackend>();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rankmesh-pipeline: %s\n", e.what());
      return 1;
    }
    options.backends.push_back(cuda.get());
    make_compute = [&o, &cuda, timeout = options.timeout](int first, int last, int tp_rank) {
      return std::make_unique<pipeline::CudaCompute>(*cuda, o.model, first, last, tp_rank, o.tp,
                                                     timeout);
    };
#else
    refuse("--device cuda: this build has no CUDA backend (configured without a CUDA toolkit, or "
           "with RANKMESH_CUDA=OFF)");
#endif
  }

  Trace trace;
  std::vector<RankReport> reports(static_cast<std::size_t>(world));
  std::vector<std::string> errors(static_cast<std::size_t>(world));
  std::vector<int> local;
  try {
    rankmesh::Runtime runtime(options);
    local = runtime.local_ranks();
    if (local.front() == 0)
      std::printf("rankmesh-pipeline: %d ranks (tp %d x pp %d), %d layers, hidden %d, "
                  "%d microbatches of %d tokens%s\n",
                  world, o.tp, o.pp, o.model.layers, o.model.hidden, o.microbatches, o.model.tokens,
                  o.device == "cuda" ? ", on cuda:0" : "");
    std::vector<std::thread> threads;
    for (int r : local)
      threads.emplace_back([&, r] {
        try {
          run_rank(runtime.rank(r), o, make_compute, trace, reports[static_cast<std::size_t>(r)]);
        } catch (const std::exception& e) {
          errors[static_cast<std::size_t>(r)] = e.what();
          runtime.abort("rank " + std::to_string(r) + " failed: " + e.what());
        }
      });
    for (auto& t : threads) t.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rankmesh-pipeline: %s\n", e.what());
    return 1;
  }
  bool failed = false;
  for (int r : local)
    if (!errors[static_cast<std::size_t>(r)].empty()) {
      std::fprintf(stderr, "rank %d: %s\n", r, errors[static_cast<std::size_t>(r)].c_str());
      failed = true;
    }
  if (failed) return 1;

  if (o.trace) trace.print();
  for (int r : local) {
    const RankReport& p = reports[static_cast<std::size_t>(r)];
    std::printf("rank %d: stage %d, tp rank %d: %d layers, %zu weight bytes; sent %d dicts, "
                "received %d, %d credits, %d all_reduces; compute %.2f ms, waiting %.2f ms\n",
                r, p.stage, p.tp_rank, p.layers, p.weight_bytes, p.dicts_sent, p.dicts_received,
                p.acks, p.all_reduces, p.compute_ms, p.wait_ms);
  }
  const double max_diff = reports[static_cast<std::size_t>(local.front())].max_abs_diff;
  if (local.front() == 0) std::printf("tolerance=%g\nmax_abs_diff=%.3g\n", kTolerance, max_diff);
  std::fflush(stdout);
  return max_diff <= kTolerance ? 0 : 1;
}
