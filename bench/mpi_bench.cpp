// mpi_bench: the patterns of `rankmesh bench` on OpenMPI, written the way an engine would move
// tensor dicts over MPI, for a side-by-side comparison (scripts/bench.sh runs both).
//
//   mpicxx -O2 -std=c++20 bench/mpi_bench.cpp -o mpi_bench
//   mpirun --allow-run-as-root --oversubscribe -np 2 ./mpi_bench --transport shm [--quick]
//   mpirun ... --mca pml ob1 --mca btl self,tcp -np 4 ./mpi_bench --transport tcp
//
// A world of 2 ranks runs dict_roundtrip (a), dict_one_way (b), all_gather, all_reduce,
// reduce_scatter and broadcast (d), p2p_latency (f), idle_wait (parked_wait, wait_1ms); a world
// of 4 runs send_allgather (c), the four collectives (d), broadcast_object (e) and
// dict_roundtrip_pairs; a world of 16 dict_roundtrip_pairs only. Output: one JSON object per
// measurement, as rankmesh bench writes them (p99 and cpu_us, the CPU time of all the world's
// processes per iteration, included), with "library": "mpi" (--json FILE appends to FILE
// instead of stdout).
//
// A tensor dict travels as an engine sends one: its metadata (keys, dtypes, shapes, scalars) as
// one message that the receiver sizes with MPI_Probe, then one message per tensor, each received
// into a fresh 64-byte-aligned allocation; one-way transfers end with a 4-byte acknowledgement.
// Collectives write into an output buffer reused across iterations (MPI's best case; rankmesh
// returns fresh tensors from its pool). Times are taken as in rankmesh bench: point-to-point
// patterns on the sending rank (its clock spans the whole exchange), collectives after an untimed
// barrier as the slowest rank's time per iteration; CPU as each rank's process CPU time over the
// measured iterations (collectives: without the barriers), summed. Every result is checked.
#define OMPI_SKIP_MPICXX 1  // the C API only: no C++ bindings (and their warnings)
#include <mpi.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::int64_t KiB = 1024;
constexpr std::int64_t MiB = 1024 * KiB;
constexpr int kTagMeta = 1, kTagTensor = 2, kTagAck = 3;

struct Settings {
  bool quick = false;
  std::set<std::string> only;
  std::string transport = "shm";
  std::string json;  // append here; empty: stdout
  bool selected(const std::string& p) const { return only.empty() || only.count(p); }
};

int g_rank = 0;

[[noreturn]] void fail(std::string_view pattern, const std::string& what) {
  std::fprintf(stderr, "mpi_bench rank %d: %.*s: %s\n", g_rank, static_cast<int>(pattern.size()),
               pattern.data(), what.c_str());
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

// Builds no message unless the check fails: checks run inside the measured loops.
void expect(bool ok, std::string_view pattern, const char* what) {
  if (!ok) fail(pattern, what);
}

double since_ns(Clock::time_point start) {
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count();
}

// This process's CPU time so far (user + system, every thread), in nanoseconds.
double process_cpu_ns() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e9 + static_cast<double>(t.tv_nsec);
}

// ---- tensors and dicts, as an engine holds them

struct FreeDeleter {
  void operator()(void* p) const noexcept { std::free(p); }
};
using Buffer = std::unique_ptr<unsigned char[], FreeDeleter>;

Buffer fresh(std::size_t bytes) {
  const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + 63) / 64 * 64;
  auto* p = static_cast<unsigned char*>(std::aligned_alloc(64, rounded));
  if (!p) fail("allocation", "out of memory for " + std::to_string(bytes) + " bytes");
  return Buffer(p);
}

enum class Kind : std::uint8_t { tensor, integer, real };

struct Entry {
  std::string key;
  Kind kind = Kind::tensor;
  std::uint8_t dtype = 0;  // 0: float32
  std::vector<std::int64_t> shape;
  Buffer data;
  std::size_t nbytes = 0;
  std::int64_t integer = 0;
  double real = 0;
};

using Dict = std::vector<Entry>;

Entry tensor_entry(const std::string& key, std::int64_t bytes, float seed) {
  Entry e;
  e.key = key;
  e.shape = {bytes / 4};
  e.nbytes = static_cast<std::size_t>(bytes);
  e.data = fresh(e.nbytes);
  auto* p = reinterpret_cast<float*>(e.data.get());
  for (std::int64_t i = 0; i < bytes / 4; ++i) p[i] = seed + static_cast<float>(i % 1021);
  return e;
}

bool same(const Dict& a, const Dict& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const Entry &x = a[i], &y = b[i];
    if (x.key != y.key || x.kind != y.kind || x.integer != y.integer || x.real != y.real ||
        x.shape != y.shape || x.nbytes != y.nbytes || x.dtype != y.dtype)
      return false;
    if (x.kind == Kind::tensor && std::memcmp(x.data.get(), y.data.get(), x.nbytes) != 0) return false;
  }
  return true;
}

template <class T>
void put(std::vector<unsigned char>& out, const T& v) {
  const std::size_t at = out.size();
  out.resize(at + sizeof v);
  std::memcpy(out.data() + at, &v, sizeof v);
}

template <class T>
T take(const unsigned char*& p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  p += sizeof v;
  return v;
}

std::vector<unsigned char> encode(const Dict& d) {
  std::vector<unsigned char> out;
  put(out, static_cast<std::uint32_t>(d.size()));
  for (const Entry& e : d) {
    put(out, static_cast<std::uint8_t>(e.kind));
    put(out, static_cast<std::uint16_t>(e.key.size()));
    const std::size_t at = out.size();
    out.resize(at + e.key.size());
    std::memcpy(out.data() + at, e.key.data(), e.key.size());
    if (e.kind == Kind::tensor) {
      put(out, e.dtype);
      put(out, static_cast<std::uint8_t>(e.shape.size()));
      for (std::int64_t dim : e.shape) put(out, dim);
    } else if (e.kind == Kind::integer) {
      put(out, e.integer);
    } else {
      put(out, e.real);
    }
  }
  return out;
}

Dict decode(const std::vector<unsigned char>& bytes) {
  const unsigned char* p = bytes.data();
  Dict d(take<std::uint32_t>(p));
  for (Entry& e : d) {
    e.kind = static_cast<Kind>(take<std::uint8_t>(p));
    const auto length = take<std::uint16_t>(p);
    e.key.assign(reinterpret_cast<const char*>(p), length);
    p += length;
    if (e.kind == Kind::tensor) {
      e.dtype = take<std::uint8_t>(p);
      e.shape.resize(take<std::uint8_t>(p));
      std::int64_t numel = 1;
      for (auto& dim : e.shape) numel *= dim = take<std::int64_t>(p);
      e.nbytes = static_cast<std::size_t>(numel) * 4;
    } else if (e.kind == Kind::integer) {
      e.integer = take<std::int64_t>(p);
    } else {
      e.real = take<double>(p);
    }
  }
  return d;
}

void send_bytes(const void* data, std::size_t n, int dst, int tag, MPI_Comm comm) {
  MPI_Send(data, static_cast<int>(n), MPI_BYTE, dst, tag, comm);
}

void recv_bytes(void* data, std::size_t n, int src, int tag, MPI_Comm comm) {
  MPI_Recv(data, static_cast<int>(n), MPI_BYTE, src, tag, comm, MPI_STATUS_IGNORE);
}

// Metadata as one message, then one message per tensor.
void send_dict(const Dict& d, int dst, MPI_Comm comm) {
  const std::vector<unsigned char> meta = encode(d);
  send_bytes(meta.data(), meta.size(), dst, kTagMeta, comm);
  for (const Entry& e : d)
    if (e.kind == Kind::tensor) send_bytes(e.data.get(), e.nbytes, dst, kTagTensor, comm);
}

// The metadata sized with MPI_Probe; each tensor into a fresh aligned allocation.
Dict recv_dict(int src, MPI_Comm comm) {
  MPI_Status status;
  MPI_Probe(src, kTagMeta, comm, &status);
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  std::vector<unsigned char> meta(static_cast<std::size_t>(count));
  recv_bytes(meta.data(), meta.size(), src, kTagMeta, comm);
  Dict d = decode(meta);
  for (Entry& e : d)
    if (e.kind == Kind::tensor) {
      e.data = fresh(e.nbytes);
      recv_bytes(e.data.get(), e.nbytes, src, kTagTensor, comm);
    }
  return d;
}

void send_ack(std::int32_t i, int dst, MPI_Comm comm) { MPI_Send(&i, 1, MPI_INT32_T, dst, kTagAck, comm); }
std::int32_t recv_ack(int src, MPI_Comm comm) {
  std::int32_t i = -1;
  MPI_Recv(&i, 1, MPI_INT32_T, src, kTagAck, comm, MPI_STATUS_IGNORE);
  return i;
}

void stamp(unsigned char* bytes, std::size_t n, std::int32_t i) {
  std::memcpy(bytes, &i, 4);
  std::memcpy(bytes + n - 4, &i, 4);
}

bool has_stamp(const unsigned char* bytes, std::size_t n, std::int32_t i) {
  std::int32_t first = 0, last = 0;
  std::memcpy(&first, bytes, 4);
  std::memcpy(&last, bytes + n - 4, 4);
  return first == i && last == i;
}

// ---- measuring, as rankmesh bench does

struct Plan {
  int warmup;
  int min_iters;
  int max_iters;
  double budget_s;
};

Plan sized(const Settings& s, Plan full) {
  if (!s.quick) return full;
  return Plan{std::min(full.warmup, 2), std::min(full.min_iters, 3), std::min(full.max_iters, 20), 0.02};
}

// This rank's timed samples and its process's CPU time over the measured iterations.
struct Timing {
  std::vector<double> ns;
  double cpu_ns = 0;
};

template <class Body>
Timing timed(const Plan& plan, bool sync, Body&& body) {
  int i = 0;
  const auto start = Clock::now();
  for (; i < plan.warmup; ++i) {
    if (sync) MPI_Barrier(MPI_COMM_WORLD);
    body(i);
  }
  double pace = plan.warmup > 0 ? since_ns(start) / plan.warmup : 0.0, slowest = 0;
  MPI_Allreduce(&pace, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  int n = plan.max_iters;
  if (slowest > 0) n = static_cast<int>(std::min<double>(plan.max_iters, plan.budget_s * 1e9 / slowest));
  n = std::clamp(n, plan.min_iters, plan.max_iters);
  Timing timing{std::vector<double>(static_cast<std::size_t>(n)), 0};
  double cpu_start = process_cpu_ns();
  for (int k = 0; k < n; ++k, ++i) {
    if (sync) {
      MPI_Barrier(MPI_COMM_WORLD);
      cpu_start = process_cpu_ns();
    }
    timing.ns[static_cast<std::size_t>(k)] = body(i);
    if (sync) timing.cpu_ns += process_cpu_ns() - cpu_start;
  }
  if (!sync) timing.cpu_ns = process_cpu_ns() - cpu_start;
  return timing;
}

// The world's CPU time per iteration in microseconds: every process's `cpu_ns` summed.
double world_cpu_us(double cpu_ns, std::size_t iterations) {
  double total = 0;
  MPI_Allreduce(&cpu_ns, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return iterations ? total / static_cast<double>(iterations) / 1e3 : 0.0;
}

std::vector<double> slowest_of(const std::vector<double>& mine) {
  std::vector<double> out(mine.size());
  MPI_Allreduce(mine.data(), out.data(), static_cast<int>(mine.size()), MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return out;
}

enum class Unit { us, ms, gbps };

// One JSON line (rank 0 writes it). `cpu_us`: world_cpu_us. A `unit_name` given: the median
// as it is, not derived from `ns` (parked_wait).
void write_line(const Settings& s, const std::string& name, int ranks, std::int64_t size,
                double mid, double p99, double lo, double hi, const char* unit_name,
                std::size_t n, double cpu_us);

void report(const Settings& s, const std::string& name, int ranks, std::int64_t size,
            std::vector<double> ns, Unit unit, double cpu_us) {
  if (g_rank != 0) return;
  std::sort(ns.begin(), ns.end());
  const std::size_t n = ns.size();
  const double median = n % 2 ? ns[n / 2] : (ns[n / 2 - 1] + ns[n / 2]) / 2;
  const double tail = ns[(n * 99 + 99) / 100 - 1];  // the smallest sample >= 99% of them
  double mid = 0, p99 = 0, lo = 0, hi = 0;
  const char* unit_name = "us";
  if (unit == Unit::gbps) {
    const auto bytes = static_cast<double>(size);
    mid = bytes / median, p99 = bytes / tail, lo = bytes / ns.back(), hi = bytes / ns.front();
    unit_name = "GB/s";
  } else {
    const double per = unit == Unit::us ? 1e3 : 1e6;
    mid = median / per, p99 = tail / per, lo = ns.front() / per, hi = ns.back() / per;
    unit_name = unit == Unit::us ? "us" : "ms";
  }
  write_line(s, name, ranks, size, mid, p99, lo, hi, unit_name, n, cpu_us);
}

void write_line(const Settings& s, const std::string& name, int ranks, std::int64_t size,
                double mid, double p99, double lo, double hi, const char* unit_name,
                std::size_t n, double cpu_us) {
  std::FILE* out = s.json.empty() ? stdout : std::fopen(s.json.c_str(), "a");
  if (!out) fail("output", "cannot write " + s.json);
  std::fprintf(out,
               "{\"name\": \"%s\", \"library\": \"mpi\", \"transport\": \"%s\", \"ranks\": %d, "
               "\"size\": %lld, \"median\": %.6g, \"p99\": %.6g, \"min\": %.6g, \"max\": %.6g, "
               "\"unit\": \"%s\", \"iterations\": %zu, \"cpu_us\": %.6g}\n",
               name.c_str(), s.transport.c_str(), ranks, static_cast<long long>(size), mid, p99, lo,
               hi, unit_name, n, cpu_us);
  if (out != stdout) std::fclose(out);
  std::fflush(stdout);
}

// ---- the patterns

// (a) metadata + 4 tensors of 64 float32 + 2 scalars to rank 1 and back.
void dict_roundtrip(const Settings& s) {
  const char* name = "dict_roundtrip";
  Dict dict;
  dict.push_back(tensor_entry("input_ids", 256, 1));
  dict.push_back(tensor_entry("positions", 256, 2));
  dict.push_back(tensor_entry("hidden_states", 256, 3));
  dict.push_back(tensor_entry("residual", 256, 4));
  Entry step;
  step.key = "step";
  step.kind = Kind::integer;
  dict.push_back(std::move(step));
  Entry temperature;
  temperature.key = "temperature";
  temperature.kind = Kind::real;
  temperature.real = 0.7;
  dict.push_back(std::move(temperature));
  Timing t = timed(sized(s, {1000, 10000, 50000, 1.0}), false, [&](int i) {
    if (g_rank == 0) {
      dict[4].integer = i;
      const auto start = Clock::now();
      send_dict(dict, 1, MPI_COMM_WORLD);
      Dict back = recv_dict(1, MPI_COMM_WORLD);
      const double took = since_ns(start);
      expect(same(back, dict), name, "the dict that came back differs from the one sent");
      return took;
    }
    const auto start = Clock::now();
    Dict got = recv_dict(0, MPI_COMM_WORLD);
    send_dict(got, 0, MPI_COMM_WORLD);
    return since_ns(start);
  });
  const double cpu = world_cpu_us(t.cpu_ns, t.ns.size());
  report(s, name, 2, 4 * 256, std::move(t.ns), Unit::us, cpu);
}

// (b), (f): one tensor one way, acknowledged. `reuse`: the receiver keeps one buffer (MPI's
// best case, for reference) instead of a fresh allocation per message.
void one_way(const Settings& s, const std::string& name, std::int64_t bytes, bool reuse, Unit unit) {
  const bool large = bytes >= MiB;
  const Plan plan = sized(s, large ? Plan{3, 10, 200, 1.0} : Plan{200, 1000, 20000, 0.3});
  Dict dict;
  dict.push_back(tensor_entry("hidden_states", bytes, 5));
  Dict last;
  Buffer kept = reuse ? fresh(static_cast<std::size_t>(bytes)) : Buffer();
  int final_iteration = 0;
  Timing t = timed(plan, false, [&](int i) {
    final_iteration = i;
    if (g_rank == 0) {
      stamp(dict[0].data.get(), dict[0].nbytes, i);
      const auto start = Clock::now();
      send_dict(dict, 1, MPI_COMM_WORLD);
      const std::int32_t ack = recv_ack(1, MPI_COMM_WORLD);
      const double took = since_ns(start);
      if (ack != i) fail(name, "acknowledgement " + std::to_string(i) + " did not come back");
      return took;
    }
    const auto start = Clock::now();
    Dict got;
    if (reuse) {  // the same message sequence, received into the kept buffer
      MPI_Status status;
      MPI_Probe(0, kTagMeta, MPI_COMM_WORLD, &status);
      int count = 0;
      MPI_Get_count(&status, MPI_BYTE, &count);
      std::vector<unsigned char> meta(static_cast<std::size_t>(count));
      recv_bytes(meta.data(), meta.size(), 0, kTagMeta, MPI_COMM_WORLD);
      got = decode(meta);
      recv_bytes(kept.get(), got[0].nbytes, 0, kTagTensor, MPI_COMM_WORLD);
      expect(has_stamp(kept.get(), got[0].nbytes, i), name, "stale bytes");
    } else {
      got = recv_dict(0, MPI_COMM_WORLD);
      if (!has_stamp(got[0].data.get(), got[0].nbytes, i))
        fail(name, "iteration " + std::to_string(i) + " received stale bytes");
    }
    send_ack(i, 0, MPI_COMM_WORLD);
    const double took = since_ns(start);
    last = std::move(got);
    return took;
  });
  if (g_rank == 1) {
    Entry expected = tensor_entry("hidden_states", bytes, 5);
    stamp(expected.data.get(), expected.nbytes, final_iteration);
    const unsigned char* received = reuse ? kept.get() : last[0].data.get();
    if (std::memcmp(received, expected.data.get(), expected.nbytes) != 0)
      fail(name, "the last " + std::to_string(bytes) + " bytes received differ");
  }
  const double cpu = world_cpu_us(t.cpu_ns, t.ns.size());
  report(s, name, 2, bytes, std::move(t.ns), unit, cpu);
}

// (d) all_gather, all_reduce and reduce_scatter of `bytes` float32 per rank, and broadcast of
// `bytes` from rank 0 into every other rank's buffer.
void collective(const Settings& s, const std::string& name, int n) {
  const std::int64_t bytes = s.quick ? 64 * KiB : 16 * MiB;
  const std::int64_t count = bytes / 4;
  const bool gather = name == "all_gather";
  const bool scatter = name == "reduce_scatter";
  const bool broadcast = name == "broadcast";
  Buffer input = fresh(static_cast<std::size_t>(bytes));
  auto* in = reinterpret_cast<float*>(input.get());
  for (std::int64_t k = 0; k < count; ++k)
    in[k] = static_cast<float>(g_rank + 1) * static_cast<float>(1 + (k & 7));
  const std::int64_t out_count = gather ? count * n : scatter ? count / n : count;
  Buffer output = fresh(static_cast<std::size_t>(out_count * 4));
  // broadcast: rank 0 sends from its input, the others receive into their output
  auto* out = broadcast && g_rank == 0 ? in : reinterpret_cast<float*>(output.get());
  auto expected = [&](std::int64_t k) {
    if (gather) return static_cast<float>(k / count + 1) * static_cast<float>(1 + ((k % count) & 7));
    if (broadcast) return static_cast<float>(1 + (k & 7));
    const std::int64_t at = scatter ? g_rank * out_count + k : k;
    return static_cast<float>(n * (n + 1) / 2) * static_cast<float>(1 + (at & 7));
  };
  Timing t = timed(sized(s, {3, 10, 200, 1.5}), true, [&](int) {
    if (out != in) out[0] = out[out_count - 1] = -1;
    const auto start = Clock::now();
    if (gather) {
      MPI_Allgather(in, static_cast<int>(count), MPI_FLOAT, out, static_cast<int>(count), MPI_FLOAT, MPI_COMM_WORLD);
    } else if (scatter) {
      MPI_Reduce_scatter_block(in, out, static_cast<int>(out_count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    } else if (broadcast) {
      MPI_Bcast(out, static_cast<int>(count), MPI_FLOAT, 0, MPI_COMM_WORLD);
    } else {
      MPI_Allreduce(in, out, static_cast<int>(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    const double took = since_ns(start);
    expect(out[0] == expected(0) && out[out_count - 1] == expected(out_count - 1), name, "wrong result");
    return took;
  });
  for (std::int64_t k = 0; k < out_count; ++k)
    if (out[k] != expected(k)) fail(name, "wrong element " + std::to_string(k));
  const double cpu = world_cpu_us(t.cpu_ns, t.ns.size());
  report(s, name, n, bytes, slowest_of(t.ns), Unit::ms, cpu);
}

// (c) tp 2 x pp 2: ranks 0 and 1 hold the same tensor and send it to rank 2 and 3, as halves
// that the receivers all-gather over their TP pair, or whole; each receiver acknowledges.
void send_allgather(const Settings& s) {
  MPI_Comm tp;
  MPI_Comm_split(MPI_COMM_WORLD, g_rank / 2, g_rank, &tp);
  const std::int64_t bytes = s.quick ? 64 * KiB : 64 * MiB;
  const bool sender = g_rank < 2;
  const int peer = sender ? g_rank + 2 : g_rank - 2;
  Dict dict;
  dict.push_back(tensor_entry("hidden_states", bytes, 9));
  for (bool sliced : {false, true}) {
    const std::string name = sliced ? "send_allgather_sliced" : "send_allgather_whole";
    const Plan plan = sized(s, {2, 5, 100, 1.5});
    Buffer last;
    int final_iteration = 0;
    Timing t = timed(plan, true, [&](int i) {
      final_iteration = i;
      if (sender) {
        Entry& t = dict[0];
        stamp(t.data.get(), t.nbytes, i);
        const auto start = Clock::now();
        if (sliced) {  // metadata, then this rank's half straight from the tensor
          const std::size_t half = t.nbytes / 2;
          Dict meta;
          meta.push_back(Entry{t.key, Kind::tensor, 0, {t.shape[0] / 2}, nullptr, half, 0, 0});
          const std::vector<unsigned char> encoded = encode(meta);
          send_bytes(encoded.data(), encoded.size(), peer, kTagMeta, MPI_COMM_WORLD);
          send_bytes(t.data.get() + half * static_cast<std::size_t>(g_rank), half, peer, kTagTensor, MPI_COMM_WORLD);
        } else {
          send_dict(dict, peer, MPI_COMM_WORLD);
        }
        const std::int32_t ack = recv_ack(peer, MPI_COMM_WORLD);
        const double took = since_ns(start);
        if (ack != i) fail(name, "acknowledgement " + std::to_string(i) + " did not come back");
        return took;
      }
      const auto start = Clock::now();
      Dict got = recv_dict(peer, MPI_COMM_WORLD);
      Buffer full;
      if (sliced) {
        const std::size_t half = got[0].nbytes;
        full = fresh(2 * half);
        MPI_Allgather(got[0].data.get(), static_cast<int>(half), MPI_BYTE, full.get(), static_cast<int>(half),
                      MPI_BYTE, tp);
      } else {
        full = std::move(got[0].data);
      }
      if (!has_stamp(full.get(), static_cast<std::size_t>(bytes), i))
        fail(name, "iteration " + std::to_string(i) + " received stale bytes");
      send_ack(i, peer, MPI_COMM_WORLD);
      const double took = since_ns(start);
      last = std::move(full);
      return took;
    });
    if (!sender) {
      Entry expected = tensor_entry("hidden_states", bytes, 9);
      stamp(expected.data.get(), expected.nbytes, final_iteration);
      expect(std::memcmp(last.get(), expected.data.get(), expected.nbytes) == 0, name,
             "the tensor gathered last differs from the one sent");
    }
    const double cpu = world_cpu_us(t.cpu_ns, t.ns.size());
    report(s, name, 4, bytes, slowest_of(t.ns), Unit::ms, cpu);
  }
  MPI_Comm_free(&tp);
}

// (e) a 1 KiB object from rank 0 to every rank: its length, then its serialized bytes.
void broadcast_object(const Settings& s, int n) {
  const char* name = "broadcast_object";
  std::vector<unsigned char> object(1024);
  for (std::size_t k = 0; k < object.size(); ++k) object[k] = static_cast<unsigned char>(k * 7);
  Timing t = timed(sized(s, {100, 1000, 10000, 1.0}), true, [&](int i) {
    std::memcpy(object.data(), &i, 4);
    const auto start = Clock::now();
    std::int64_t length = g_rank == 0 ? static_cast<std::int64_t>(object.size()) + 8 : 0;
    std::vector<unsigned char> wire;
    if (g_rank == 0) {  // serialized: a type tag and the bytes
      wire.resize(static_cast<std::size_t>(length));
      const std::int64_t tag = 0x42;
      std::memcpy(wire.data(), &tag, 8);
      std::memcpy(wire.data() + 8, object.data(), object.size());
    }
    MPI_Bcast(&length, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    if (g_rank != 0) wire.resize(static_cast<std::size_t>(length));
    MPI_Bcast(wire.data(), static_cast<int>(length), MPI_BYTE, 0, MPI_COMM_WORLD);
    std::vector<unsigned char> got(wire.begin() + 8, wire.end());  // deserialized
    const double took = since_ns(start);
    expect(got == object, name, "wrong object");
    return took;
  });
  const double cpu = world_cpu_us(t.cpu_ns, t.ns.size());
  report(s, name, n, 1024, slowest_of(t.ns), Unit::us, cpu);
}

// (a) oversubscribed: ranks in pairs (0-1, 2-3, ...), every pair doing round trips at once; the
// samples of every pair's sender, CPU per round trip.
void dict_roundtrip_pairs(const Settings& s, int n) {
  const char* name = "dict_roundtrip_pairs";
  const int peer = g_rank ^ 1;
  const bool sender = g_rank % 2 == 0;
  Dict dict;
  for (const auto& [key, seed] : {std::pair{"input_ids", 1.f}, {"positions", 2.f}, {"hidden_states", 3.f},
                                  {"residual", 4.f}})
    dict.push_back(tensor_entry(key, 256, seed));
  Entry step;
  step.key = "step";
  step.kind = Kind::integer;
  dict.push_back(std::move(step));
  Timing t = timed(sized(s, {200, 1000, 20000, 1.0}), false, [&](int i) {
    const auto start = Clock::now();
    if (sender) {
      dict[4].integer = i;
      send_dict(dict, peer, MPI_COMM_WORLD);
      Dict back = recv_dict(peer, MPI_COMM_WORLD);
      const double took = since_ns(start);
      expect(same(back, dict), name, "the dict that came back differs from the one sent");
      return took;
    }
    Dict got = recv_dict(peer, MPI_COMM_WORLD);
    send_dict(got, peer, MPI_COMM_WORLD);
    return since_ns(start);
  });
  const double cpu = world_cpu_us(t.cpu_ns, t.ns.size());
  std::vector<double> all(t.ns.size() * static_cast<std::size_t>(n));
  MPI_Gather(t.ns.data(), static_cast<int>(t.ns.size()), MPI_DOUBLE, all.data(), static_cast<int>(t.ns.size()),
             MPI_DOUBLE, 0, MPI_COMM_WORLD);
  std::vector<double> senders;
  for (int k = 0; k < n; k += 2)
    senders.insert(senders.end(), all.begin() + static_cast<std::ptrdiff_t>(k * t.ns.size()),
                   all.begin() + static_cast<std::ptrdiff_t>((k + 1) * t.ns.size()));
  report(s, name, n, 4 * 256, std::move(senders), Unit::us, cpu / (n / 2));
}

// What a wait costs, as in rankmesh bench: rank 1 in MPI_Recv for 2 s while rank 0 sleeps
// (parked_wait: % of a core), then 500 waits for a message sent 1 ms after rank 1 asked for it
// (wait_1ms: rank 1's CPU per wait in cpu_us).
void idle_wait(const Settings& s) {
  const auto parked_for = s.quick ? std::chrono::milliseconds(200) : std::chrono::seconds(2);
  MPI_Barrier(MPI_COMM_WORLD);
  std::int32_t value = 1;
  double parked[2] = {0, 0};  // rank 1's CPU and wall time
  if (g_rank == 0) {
    std::this_thread::sleep_for(parked_for);
    send_ack(value, 1, MPI_COMM_WORLD);
  } else {
    const auto start = Clock::now();
    const double cpu_start = process_cpu_ns();
    value = recv_ack(0, MPI_COMM_WORLD);
    parked[0] = process_cpu_ns() - cpu_start;
    parked[1] = since_ns(start);
    send_bytes(parked, sizeof parked, 0, kTagAck, MPI_COMM_WORLD);
  }
  if (g_rank == 0) {
    recv_bytes(parked, sizeof parked, 1, kTagAck, MPI_COMM_WORLD);
    const double percent = 100 * parked[0] / parked[1];
    write_line(s, "parked_wait", 2, 0, percent, percent, percent, percent, "% core", 1, parked[0] / 1e3);
  }
  const int waits = s.quick ? 20 : 500;
  std::vector<double> ns(static_cast<std::size_t>(waits));
  double cpu_ns = 0;
  for (int i = 0; i < waits; ++i) {
    if (g_rank == 0) {
      expect(recv_ack(1, MPI_COMM_WORLD) == i, "wait_1ms", "wrong request");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      send_ack(i, 1, MPI_COMM_WORLD);
      continue;
    }
    send_ack(i, 0, MPI_COMM_WORLD);
    const auto start = Clock::now();
    const double cpu_start = process_cpu_ns();
    const std::int32_t got = recv_ack(0, MPI_COMM_WORLD);
    cpu_ns += process_cpu_ns() - cpu_start;
    ns[static_cast<std::size_t>(i)] = since_ns(start);
    expect(got == i, "wait_1ms", "wrong object");
  }
  if (g_rank == 1) {
    send_bytes(ns.data(), ns.size() * sizeof(double), 0, kTagAck, MPI_COMM_WORLD);
    send_bytes(&cpu_ns, sizeof cpu_ns, 0, kTagAck, MPI_COMM_WORLD);
  } else {
    recv_bytes(ns.data(), ns.size() * sizeof(double), 1, kTagAck, MPI_COMM_WORLD);
    recv_bytes(&cpu_ns, sizeof cpu_ns, 1, kTagAck, MPI_COMM_WORLD);
    report(s, "wait_1ms", 2, 8, std::move(ns), Unit::us, cpu_ns / 1e3 / waits);
  }
}

std::set<std::string> parse_only(const std::string& text) {
  const std::pair<const char*, std::vector<std::string>> letters[] = {
      {"a", {"dict_roundtrip"}}, {"b", {"dict_one_way"}}, {"c", {"send_allgather"}},
      {"d", {"all_gather", "all_reduce", "reduce_scatter", "broadcast"}},
      {"e", {"broadcast_object"}}, {"f", {"p2p_latency"}}};
  std::set<std::string> only;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    bool letter = false;
    for (const auto& [l, names] : letters)
      if (item == l) letter = true, only.insert(names.begin(), names.end());
    if (!letter && !item.empty()) only.insert(item);
  }
  return only;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int n = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      s.quick = true;
    } else if (arg == "--only" && i + 1 < argc) {
      s.only = parse_only(argv[++i]);
    } else if (arg == "--transport" && i + 1 < argc) {
      s.transport = argv[++i];
    } else if (arg == "--json" && i + 1 < argc) {
      s.json = argv[++i];
    } else {
      if (g_rank == 0)
        std::fprintf(stderr, "usage: mpi_bench [--quick] [--only NAMES] [--transport LABEL] [--json FILE]\n");
      MPI_Finalize();
      return 2;
    }
  }
  if (n != 2 && n != 4 && n != 16) {
    if (g_rank == 0) std::fprintf(stderr, "mpi_bench: runs on 2, 4 or 16 ranks, not %d\n", n);
    MPI_Finalize();
    return 2;
  }
  const std::int64_t big = s.quick ? 64 * KiB : 64 * MiB;
  if (n == 2) {
    if (s.selected("dict_roundtrip")) dict_roundtrip(s);
    if (s.selected("dict_one_way")) {
      one_way(s, "dict_one_way", big, false, Unit::gbps);
      one_way(s, "dict_one_way_reuse", big, true, Unit::gbps);
    }
  } else if (n == 4 && s.selected("send_allgather")) {
    send_allgather(s);
  }
  for (const char* name : {"all_gather", "all_reduce", "reduce_scatter", "broadcast"})
    if (n <= 4 && s.selected(name)) collective(s, name, n);
  if (n == 2 && s.selected("p2p_latency")) {
    std::vector<std::int64_t> sizes;
    if (s.quick) {
      sizes = {8, 4 * KiB, 64 * KiB};
    } else {
      for (std::int64_t b = 8; b < 64 * MiB; b *= 8) sizes.push_back(b);
      sizes.push_back(64 * MiB);
    }
    for (std::int64_t b : sizes) one_way(s, "p2p_latency", b, false, Unit::us);
  }
  if (n == 4 && s.selected("broadcast_object")) broadcast_object(s, n);
  if (n >= 4 && s.selected("dict_roundtrip_pairs")) dict_roundtrip_pairs(s, n);
  if (n == 2 && s.selected("idle_wait")) idle_wait(s);
  MPI_Finalize();
  return 0;
}
