// The patterns `rankmesh bench` measures, each run by every rank of the world and checked.
//
// How a time is taken (bench/mpi_bench.cpp does the same):
// - point-to-point patterns (a round trip, a dict one way until its acknowledgement returns)
//   are timed on the sending rank, whose clock spans the whole exchange;
// - collective patterns start each iteration with a world barrier (not timed) and take, per
//   iteration, the slowest rank's time.
// Each measurement runs a few untimed iterations first, then as many as fit its time budget at
// the slowest rank's warm-up pace, within fixed bounds, so every benchmark ends by itself.
//
// How CPU is counted: each process's CPU time (user + system, all its threads) over the measured
// iterations, summed over the world's processes and divided by the iterations. Collective
// patterns count only the iterations' bodies, not the barriers between them; in-process worlds
// count their one process once.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "bench.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/parallel_state.hpp"

namespace rankmesh::tool::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::int64_t KiB = 1024;
constexpr std::int64_t MiB = 1024 * KiB;

double since_ns(Clock::time_point start) {
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count();
}

// This process's CPU time so far (user + system, every thread), in nanoseconds.
double process_cpu_ns() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e9 + static_cast<double>(t.tv_nsec);
}

// `warmup` untimed iterations, then as many as fit `budget_s` at the warm-up's pace (the slowest
// rank's), but at least `min_iters` and at most `max_iters`.
struct Plan {
  int warmup;
  int min_iters;
  int max_iters;
  double budget_s;
};

Plan sized(const Settings& s, Plan full) {
  if (!s.quick) return full;
  return Plan{std::min(full.warmup, 2), std::min(full.min_iters, 3), std::min(full.max_iters, 20),
              0.02};
}

enum class Unit { us, ms, gbps };

[[noreturn]] void fail(std::string_view pattern, const std::string& what) {
  throw Error(Errc::mismatch, "bench " + std::string(pattern) + ": " + what);
}

// Builds no message unless the check fails: checks run inside the measured loops.
void expect(bool ok, std::string_view pattern, const char* what) {
  if (!ok) fail(pattern, what);
}

Tensor f64_tensor(const std::vector<double>& values) {
  Tensor t = Tensor::empty(Shape{static_cast<std::int64_t>(values.size())}, DType::f64);
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(double));
  return t;
}

// This rank's timed samples and its process's CPU time over the measured iterations.
struct Timing {
  std::vector<double> ns;
  double cpu_ns = 0;
};

// Runs `body(i)`, which returns the nanoseconds it timed, the same number of times on every
// rank. `sync`: a world barrier before each iteration (its CPU not counted).
template <class Body>
Timing timed(GroupCoordinator& world, const Plan& plan, bool sync, Body&& body) {
  int i = 0;
  const auto start = Clock::now();
  for (; i < plan.warmup; ++i) {
    if (sync) world.barrier();
    body(i);
  }
  const double pace = plan.warmup > 0 ? since_ns(start) / plan.warmup : 0.0;
  const double slowest = world.all_reduce(f64_tensor({pace}), ReduceOp::max).data_as<double>()[0];
  int n = plan.max_iters;
  if (slowest > 0)
    n = static_cast<int>(std::min<double>(plan.max_iters, plan.budget_s * 1e9 / slowest));
  n = std::clamp(n, plan.min_iters, plan.max_iters);
  Timing timing{std::vector<double>(static_cast<std::size_t>(n)), 0};
  double cpu_start = process_cpu_ns();
  for (int k = 0; k < n; ++k, ++i) {
    if (sync) {
      world.barrier();
      cpu_start = process_cpu_ns();
    }
    timing.ns[static_cast<std::size_t>(k)] = body(i);
    if (sync) timing.cpu_ns += process_cpu_ns() - cpu_start;
  }
  if (!sync) timing.cpu_ns = process_cpu_ns() - cpu_start;
  return timing;
}

// The world's CPU time per iteration in microseconds: every process's `cpu_ns` summed (a world
// in one process counts it once, rank 0's), over `iterations`.
double world_cpu_us(GroupCoordinator& world, const Settings& s, double cpu_ns,
                    std::size_t iterations) {
  const double mine = s.one_process && world.rank_in_group() != 0 ? 0.0 : cpu_ns;
  const double total = world.all_reduce(f64_tensor({mine})).data_as<double>()[0];
  return iterations ? total / static_cast<double>(iterations) / 1e3 : 0.0;
}

// Per iteration, the slowest rank's time.
std::vector<double> slowest_of(GroupCoordinator& world, const std::vector<double>& mine) {
  Tensor all = world.all_reduce(f64_tensor(mine), ReduceOp::max);
  const double* p = all.data_as<double>();
  return std::vector<double>(p, p + mine.size());
}

// `cpu_us`: the world's CPU time per iteration (world_cpu_us).
Measurement summarize(const Settings& s, const std::string& name, int ranks, std::int64_t size,
                      std::vector<double> ns, Unit unit, double cpu_us) {
  std::sort(ns.begin(), ns.end());
  const std::size_t n = ns.size();
  const double median = n % 2 ? ns[n / 2] : (ns[n / 2 - 1] + ns[n / 2]) / 2;
  const double p99 = ns[(n * 99 + 99) / 100 - 1];  // the smallest sample >= 99% of them
  Measurement m{name, s.transport, ranks, size, 0, 0, 0, 0, "", static_cast<std::int64_t>(n),
                cpu_us};
  if (unit == Unit::gbps) {  // bytes per nanosecond are GB/s (1e9 bytes); p99: of the times
    const auto bytes = static_cast<double>(size);
    m.median = bytes / median;
    m.p99 = bytes / p99;
    m.min = bytes / ns.back();
    m.max = bytes / ns.front();
    m.unit = "GB/s";
  } else {
    const double per = unit == Unit::us ? 1e3 : 1e6;
    m.median = median / per;
    m.p99 = p99 / per;
    m.min = ns.front() / per;
    m.max = ns.back() / per;
    m.unit = unit == Unit::us ? "us" : "ms";
  }
  return m;
}

// A float32 tensor of `bytes` bytes (a multiple of 4) with values from `seed`.
Tensor filled(std::int64_t bytes, float seed) {
  Tensor t = Tensor::empty(Shape{bytes / 4}, DType::f32);
  float* p = t.data_as<float>();
  for (std::int64_t i = 0; i < bytes / 4; ++i) p[i] = seed + static_cast<float>(i % 1021);
  return t;
}

// The iteration number in the first and the last four bytes: a receiver that sees it got this
// iteration's bytes, not an earlier buffer's.
void stamp(const Tensor& t, std::int32_t i) {
  auto* bytes = static_cast<unsigned char*>(t.data());
  std::memcpy(bytes, &i, 4);
  std::memcpy(bytes + t.nbytes() - 4, &i, 4);
}

bool has_stamp(const Tensor& t, std::int32_t i) {
  const auto* bytes = static_cast<const unsigned char*>(t.data());
  std::int32_t first = 0, last = 0;
  std::memcpy(&first, bytes, 4);
  std::memcpy(&last, bytes + t.nbytes() - 4, 4);
  return first == i && last == i;
}

const Tensor& tensor_at(const TensorDict& d, const char* key) { return d.at(key).as<Tensor>(); }

// (a) metadata + 4 tensors of 64 float32 + 2 scalars to rank 1 and back. Rank 1 returns what it
// got (donated: it is done with it).
Measurement dict_roundtrip(ParallelState& s, const Settings& settings) {
  GroupCoordinator& w = s.world();
  const char* name = "dict_roundtrip";
  TensorDict dict{{"input_ids", filled(256, 1)}, {"positions", filled(256, 2)},
                  {"hidden_states", filled(256, 3)}, {"residual", filled(256, 4)},
                  {"step", 0}, {"temperature", 0.7}};
  const Plan plan = sized(settings, {1000, 10000, 50000, 1.0});
  Timing t = timed(w, plan, false, [&](int i) {
    if (w.rank_in_group() == 0) {
      dict.set("step", i);
      const auto start = Clock::now();
      w.send_tensor_dict(dict, 1);
      TensorDict back = w.recv_tensor_dict(1);
      const double took = since_ns(start);
      expect(back == dict, name, "the dict that came back differs from the one sent");
      return took;
    }
    const auto start = Clock::now();
    TensorDict got = w.recv_tensor_dict(0);
    w.send_tensor_dict(std::move(got), 0);
    return since_ns(start);
  });
  const double cpu = world_cpu_us(w, settings, t.cpu_ns, t.ns.size());
  return summarize(settings, name, 2, 4 * 256, std::move(t.ns), Unit::us, cpu);
}

// (b), (f) and the donation check: a dict of one tensor from rank 0 to rank 1, which checks it
// and acknowledges with a small object; timed on rank 0 until the acknowledgement is back.
Measurement one_way(ParallelState& s, const Settings& settings, const std::string& name,
                    std::int64_t bytes, bool donate, Unit unit) {
  GroupCoordinator& w = s.world();
  const bool large = bytes >= MiB;
  const Plan plan = sized(settings, large ? Plan{3, 10, 200, 1.0} : Plan{200, 1000, 20000, 0.3});
  TensorDict dict{{"hidden_states", filled(bytes, 5)}};
  TensorDict last;
  Timing t = timed(w, plan, false, [&](int i) {
    if (w.rank_in_group() == 0) {
      stamp(tensor_at(dict, "hidden_states"), i);
      const auto start = Clock::now();
      if (donate) {
        TensorDict given = dict;  // shares the tensor: the receiver may keep its memory
        w.send_tensor_dict(std::move(given), 1);
      } else {
        w.send_tensor_dict(dict, 1);
      }
      const Value ack = w.recv_object(1);
      const double took = since_ns(start);
      if (ack != Value(i))
        fail(name, "acknowledgement " + std::to_string(i) + " did not come back");
      return took;
    }
    const auto start = Clock::now();
    TensorDict got = w.recv_tensor_dict(0);
    if (!has_stamp(tensor_at(got, "hidden_states"), i))
      fail(name, "iteration " + std::to_string(i) + " received stale bytes");
    w.send_object(Value(i), 0);
    const double took = since_ns(start);
    last = std::move(got);
    return took;
  });
  if (w.rank_in_group() == 1) {
    TensorDict expected{{"hidden_states", filled(bytes, 5)}};
    stamp(tensor_at(expected, "hidden_states"), plan.warmup + static_cast<int>(t.ns.size()) - 1);
    if (!(last == expected))
      fail(name, "the last " + std::to_string(bytes) + " bytes received differ");
  }
  const double cpu = world_cpu_us(w, settings, t.cpu_ns, t.ns.size());
  return summarize(settings, name, 2, bytes, std::move(t.ns), unit, cpu);
}

// (d) all_gather, all_reduce and reduce_scatter of `bytes` float32 per rank over the world, and
// broadcast of `bytes` from rank 0 (in place: every other rank receives into the tensor it
// received into last time, as MPI_Bcast into its buffer).
Measurement collective(ParallelState& s, const Settings& settings, const std::string& name) {
  GroupCoordinator& w = s.world();
  const int n = w.world_size();
  const int r = w.rank_in_group();
  const std::int64_t bytes = settings.quick ? 64 * KiB : 16 * MiB;
  const std::int64_t count = bytes / 4;
  Tensor input = Tensor::empty(Shape{count}, DType::f32);
  for (std::int64_t k = 0; k < count; ++k)
    input.data_as<float>()[k] = static_cast<float>(r + 1) * static_cast<float>(1 + (k & 7));
  const bool gather = name == "all_gather";
  const bool scatter = name == "reduce_scatter";
  const bool broadcast = name == "broadcast";
  const std::int64_t out_count = gather ? count * n : scatter ? count / n : count;
  // What element k of the result must be (sum: 1 + .. + n ranks' values; gather: rank k/count's;
  // reduce_scatter: the sum's slice of this rank; broadcast: rank 0's).
  auto expected = [&](std::int64_t k) {
    if (gather)
      return static_cast<float>(k / count + 1) * static_cast<float>(1 + ((k % count) & 7));
    if (broadcast) return static_cast<float>(1 + (k & 7));
    const std::int64_t at = scatter ? r * out_count + k : k;
    return static_cast<float>(n * (n + 1) / 2) * static_cast<float>(1 + (at & 7));
  };
  Tensor out = broadcast && r != 0 ? Tensor::empty(Shape{count}, DType::f32) : Tensor();
  const Plan plan = sized(settings, {3, 10, 200, 1.5});
  Timing t = timed(w, plan, true, [&](int) {
    if (broadcast) {
      Tensor& target = r == 0 ? input : out;
      if (r != 0) out.data_as<float>()[0] = out.data_as<float>()[count - 1] = -1;  // no stale pass
      const auto start = Clock::now();
      w.broadcast(target, 0);
      const double took = since_ns(start);
      const float* p = target.data_as<float>();
      expect(p[0] == expected(0) && p[count - 1] == expected(count - 1), name, "wrong result");
      out = target;
      return took;
    }
    out = Tensor();  // the previous result goes before the clock starts (MPI reuses its buffer)
    const auto start = Clock::now();
    out = gather    ? w.all_gather(input, 0)
          : scatter ? w.reduce_scatter(input, 0)
                    : w.all_reduce(input);
    const double took = since_ns(start);
    const float* p = out.data_as<float>();
    expect(out.numel() == out_count && p[0] == expected(0) &&
               p[out_count - 1] == expected(out_count - 1),
           name, "wrong result");
    return took;
  });
  for (std::int64_t k = 0; k < out_count; ++k)
    if (out.data_as<float>()[k] != expected(k)) fail(name, "wrong element " + std::to_string(k));
  const double cpu = world_cpu_us(w, settings, t.cpu_ns, t.ns.size());
  return summarize(settings, name, n, bytes, slowest_of(w, t.ns), Unit::ms, cpu);
}

// (c) tp 2 x pp 2: both first-stage ranks hold the same tensor and send it to their next-stage
// peer, as slices that the receivers all-gather over TP, or whole; each receiver acknowledges.
template <class Report>
void send_allgather(ParallelState& s, const Settings& settings, Report&& report) {
  s.initialize_model_parallel(2, 2);
  GroupCoordinator& pp = s.pp();
  GroupCoordinator& tp = s.tp();
  const std::int64_t bytes = settings.quick ? 64 * KiB : 64 * MiB;
  const bool sender = pp.rank_in_group() == 0;
  TensorDict dict{{"hidden_states", filled(bytes, 9)}};
  constexpr int kVariants = 3;
  const std::pair<const char*, AllGatherTensors> variants[kVariants] = {
      {"send_allgather_whole", {{"hidden_states", false}}},
      {"send_allgather_sliced", {{"hidden_states", true}}},
      {"send_allgather_auto", {}},  // the runtime's choice: the per-key map left empty
  };
  // One transfer of variant `v`, stamped `id`; the sender's time until the acknowledgement, the
  // receiver's until it sent it.
  TensorDict last[kVariants];
  int last_id[kVariants] = {};
  auto transfer = [&](int v, int id) {
    const auto& [name, keys] = variants[v];
    if (sender) {
      stamp(tensor_at(dict, "hidden_states"), id);
      const auto start = Clock::now();
      pp.send_tensor_dict(dict, 1, &tp, keys);
      const Value ack = pp.recv_object(1);
      const double took = since_ns(start);
      if (ack != Value(id)) fail(name, "acknowledgement " + std::to_string(id) + " did not come back");
      return took;
    }
    const auto start = Clock::now();
    TensorDict got = pp.recv_tensor_dict(0, &tp, keys);
    if (!has_stamp(tensor_at(got, "hidden_states"), id))
      fail(name, "transfer " + std::to_string(id) + " received stale bytes");
    pp.send_object(Value(id), 0);
    const double took = since_ns(start);
    last[v] = std::move(got);
    last_id[v] = id;
    return took;
  };
  // The variants take turns within each iteration, in each of the six orders in turn, so that
  // drift in the machine's state (page cache, socket buffers, the other processes) and what one
  // variant leaves behind for the next spread evenly over all three.
  static constexpr int kOrders[6][kVariants] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                                {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  const Plan plan = sized(settings, {2, 6, 96, 4.5});
  std::vector<double> samples[kVariants];
  double cpu_ns[kVariants] = {};
  timed(s.world(), plan, false, [&](int i) {
    double total = 0;
    for (int k = 0; k < kVariants; ++k) {
      const int v = kOrders[i % 6][k];
      s.world().barrier();
      const double cpu_start = process_cpu_ns();
      const double took = transfer(v, i * kVariants + v);
      if (i >= plan.warmup) {
        samples[v].push_back(took);
        cpu_ns[v] += process_cpu_ns() - cpu_start;
      }
      total += took;
    }
    return total;
  });
  for (int v = 0; v < kVariants; ++v) {
    const char* name = variants[v].first;
    if (!sender) {
      TensorDict expected{{"hidden_states", filled(bytes, 9)}};
      stamp(tensor_at(expected, "hidden_states"), last_id[v]);
      expect(last[v] == expected, name, "the tensor gathered last differs from the one sent");
    }
    const double cpu = world_cpu_us(s.world(), settings, cpu_ns[v], samples[v].size());
    report(summarize(settings, name, 4, bytes, slowest_of(s.world(), samples[v]), Unit::ms, cpu));
  }
  s.destroy_model_parallel();
}

// (e) a 1 KiB object from rank 0 to every rank.
Measurement broadcast_object(ParallelState& s, const Settings& settings) {
  GroupCoordinator& w = s.world();
  const char* name = "broadcast_object";
  Bytes payload(1024);
  for (std::size_t k = 0; k < payload.size(); ++k) payload[k] = static_cast<std::uint8_t>(k * 7);
  const Plan plan = sized(settings, {100, 1000, 10000, 1.0});
  Timing t = timed(w, plan, true, [&](int i) {
    Value object;
    if (w.rank_in_group() == 0) {
      std::memcpy(payload.data(), &i, 4);
      object = Value(payload);
    }
    const auto start = Clock::now();
    Value got = w.broadcast_object(object, 0);
    const double took = since_ns(start);
    std::memcpy(payload.data(), &i, 4);
    expect(got.is<Bytes>() && got.as<Bytes>() == payload, name, "wrong object");
    return took;
  });
  const double cpu = world_cpu_us(w, settings, t.cpu_ns, t.ns.size());
  return summarize(settings, name, w.world_size(), 1024, slowest_of(w, t.ns), Unit::us, cpu);
}

// (a) oversubscribed: the world's ranks in pairs (0-1, 2-3, ...), each pair doing round trips of
// the small dict at the same time; a world of 4 or 16 on a machine of fewer cores shows how
// waits behave when a waiter's peer has no core to run on. The samples of every pair's sender;
// CPU per round trip (the world's CPU per iteration over its pairs).
Measurement dict_roundtrip_pairs(ParallelState& s, const Settings& settings) {
  GroupCoordinator& w = s.world();
  const char* name = "dict_roundtrip_pairs";
  const int r = w.rank_in_group();
  const int peer = r ^ 1;
  const bool sender = r % 2 == 0;
  TensorDict dict{{"input_ids", filled(256, 1)}, {"positions", filled(256, 2)},
                  {"hidden_states", filled(256, 3)}, {"residual", filled(256, 4)},
                  {"step", 0}, {"temperature", 0.7}};
  const Plan plan = sized(settings, {200, 1000, 20000, 1.0});
  Timing t = timed(w, plan, false, [&](int i) {
    const auto start = Clock::now();
    if (sender) {
      dict.set("step", i);
      w.send_tensor_dict(dict, peer);
      TensorDict back = w.recv_tensor_dict(peer);
      const double took = since_ns(start);
      expect(back == dict, name, "the dict that came back differs from the one sent");
      return took;
    }
    TensorDict got = w.recv_tensor_dict(peer);
    w.send_tensor_dict(std::move(got), peer);
    return since_ns(start);
  });
  const double cpu = world_cpu_us(w, settings, t.cpu_ns, t.ns.size());
  const auto per_rank = static_cast<std::ptrdiff_t>(t.ns.size());
  const Tensor all = w.all_gather(f64_tensor(t.ns), 0);  // every rank's samples, in rank order
  std::vector<double> senders;
  for (int k = 0; k < w.world_size(); k += 2)
    senders.insert(senders.end(), all.data_as<double>() + k * per_rank,
                   all.data_as<double>() + (k + 1) * per_rank);
  return summarize(settings, name, w.world_size(), 4 * 256, std::move(senders), Unit::us,
                   cpu / (w.world_size() / 2));
}

// What waiting costs, under the world's spin (names end in `_spin0` under spin 0).
// `parked_wait`: rank 1 blocked in a receive for a few seconds while rank 0 sleeps; rank 1's
// process's CPU over that time in % of one core (cpu_us: the CPU in total). `wait_1ms`: rank 1
// waits for a message that rank 0 sends 1 ms after rank 1 asked for it, many times; the waits'
// times, and rank 1's process's CPU per wait in cpu_us (the spin before parking, the wake-up, the
// receive).
template <class Report>
void idle_wait(ParallelState& s, const Settings& settings, Report&& report) {
  GroupCoordinator& w = s.world();
  const int r = w.rank_in_group();
  const std::string suffix = settings.spin && settings.spin->count() == 0 ? "_spin0" : "";
  const auto parked_for = settings.quick ? std::chrono::milliseconds(200) : std::chrono::seconds(2);
  w.barrier();
  double cpu_ns = 0, wall_ns = 0;
  if (r == 0) {
    std::this_thread::sleep_for(parked_for);
    w.send_object(Value(1), 1);
  } else {
    const auto start = Clock::now();
    const double cpu_start = process_cpu_ns();
    const Value got = w.recv_object(0);
    cpu_ns = process_cpu_ns() - cpu_start;
    wall_ns = since_ns(start);
    expect(got == Value(1), "parked_wait", "wrong object");
  }
  // Rank 1's figures, summed with rank 0's zeros, to rank 0, which reports.
  const Tensor parked = w.all_reduce(f64_tensor({cpu_ns, wall_ns}), ReduceOp::sum);
  const double percent = 100 * parked.data_as<double>()[0] / parked.data_as<double>()[1];
  report(Measurement{"parked_wait" + suffix, settings.transport, 2, 0, percent, percent, percent,
                     percent, "% core", 1, parked.data_as<double>()[0] / 1e3});

  const int waits = settings.quick ? 20 : 500;
  std::vector<double> ns(static_cast<std::size_t>(waits), 0.0);
  double wait_cpu_ns = 0;
  for (int i = 0; i < waits; ++i) {
    if (r == 0) {
      expect(w.recv_object(1) == Value(i), "wait_1ms", "wrong request");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      w.send_object(Value(i), 1);
      continue;
    }
    w.send_object(Value(i), 0);
    const auto start = Clock::now();
    const double cpu_start = process_cpu_ns();
    const Value got = w.recv_object(0);
    wait_cpu_ns += process_cpu_ns() - cpu_start;
    ns[static_cast<std::size_t>(i)] = since_ns(start);
    expect(got == Value(i), "wait_1ms", "wrong object");
  }
  const Tensor samples = w.all_reduce(f64_tensor(ns), ReduceOp::sum);  // rank 1's
  const double cpu_us =
      w.all_reduce(f64_tensor({wait_cpu_ns}), ReduceOp::sum).data_as<double>()[0] / 1e3 / waits;
  std::vector<double> rank1(samples.data_as<double>(), samples.data_as<double>() + waits);
  report(summarize(settings, "wait_1ms" + suffix, 2, 8, std::move(rank1), Unit::us, cpu_us));
}

}  // namespace

std::string to_json(const Measurement& m) {
  char numbers[256];
  std::snprintf(numbers, sizeof numbers,
                "\"size\": %lld, \"median\": %.6g, \"p99\": %.6g, \"min\": %.6g, \"max\": %.6g, ",
                static_cast<long long>(m.size), m.median, m.p99, m.min, m.max);
  char cpu[64];
  std::snprintf(cpu, sizeof cpu, ", \"cpu_us\": %.6g}", m.cpu_us);
  return "{\"name\": \"" + m.name + "\", \"library\": \"rankmesh\", \"transport\": \"" +
         m.transport + "\", \"ranks\": " + std::to_string(m.ranks) + ", " + numbers +
         "\"unit\": \"" + m.unit + "\", \"iterations\": " + std::to_string(m.iterations) + cpu;
}

std::vector<std::string> patterns_for(int ranks, const Settings& settings) {
  std::vector<std::string> all;
  if (ranks == 2) {
    all = {"dict_roundtrip", "dict_one_way", "all_gather", "all_reduce", "reduce_scatter",
           "broadcast", "p2p_latency", "idle_wait"};
    if (settings.transport == "inproc") all.push_back("p2p_donated");
  } else if (ranks == 4) {
    all = {"send_allgather", "all_gather",       "all_reduce",          "reduce_scatter",
           "broadcast",      "broadcast_object", "dict_roundtrip_pairs"};
  } else if (ranks == 16) {
    all = {"dict_roundtrip_pairs"};
  }
  std::vector<std::string> chosen;
  for (const auto& p : all)
    if (settings.selected(p)) chosen.push_back(p);
  return chosen;
}

void run_patterns(ParallelState& s, const Settings& settings,
                  const std::function<void(const Measurement&)>& report) {
  auto add = [&](const Measurement& m) {
    if (s.rank() == 0) report(m);
  };
  const std::int64_t big = settings.quick ? 64 * KiB : 64 * MiB;
  for (const std::string& p : patterns_for(s.world_size(), settings)) {
    if (p == "dict_roundtrip") add(dict_roundtrip(s, settings));
    if (p == "dict_one_way") {
      add(one_way(s, settings, "dict_one_way", big, false, Unit::gbps));
      add(one_way(s, settings, "dict_one_way_donated", big, true, Unit::gbps));
    }
    if (p == "all_gather" || p == "all_reduce" || p == "reduce_scatter" || p == "broadcast")
      add(collective(s, settings, p));
    if (p == "p2p_latency" || p == "p2p_donated") {
      std::vector<std::int64_t> sizes;
      if (settings.quick) {
        sizes = {8, 4 * KiB, 64 * KiB};
      } else if (p == "p2p_donated") {
        sizes = {64, 64 * MiB};
      } else {
        for (std::int64_t b = 8; b < 64 * MiB; b *= 8) sizes.push_back(b);
        sizes.push_back(64 * MiB);
      }
      for (std::int64_t b : sizes) add(one_way(s, settings, p, b, p == "p2p_donated", Unit::us));
    }
    if (p == "send_allgather") send_allgather(s, settings, add);
    if (p == "broadcast_object") add(broadcast_object(s, settings));
    if (p == "dict_roundtrip_pairs") add(dict_roundtrip_pairs(s, settings));
    if (p == "idle_wait") idle_wait(s, settings, add);
  }
}

}  // namespace rankmesh::tool::bench
