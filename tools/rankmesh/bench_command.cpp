// `rankmesh bench`: measures the patterns of bench.hpp on every transport and prints one JSON
// object per measurement. inproc worlds run inside this process; shm and tcp worlds are this
// same binary started by `rankmesh launch` as `rankmesh bench --worker FILE`, with
// RANKMESH_TRANSPORT forced, rank 0 writing its measurements to FILE.
#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "arguments.hpp"
#include "bench.hpp"
#include "commands.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/runtime.hpp"

extern char** environ;

namespace rankmesh::tool {
namespace {

constexpr const char* kHelp =
    "usage: rankmesh bench [--quick] [--json FILE] [--only NAMES] [--transport LIST]\n"
    "                      [--timeout-s S] [--spin-us U]\n"
    "Measures rankmesh on inproc (ranks in this process), shm and tcp (ranks in processes started\n"
    "by rankmesh launch, RANKMESH_TRANSPORT forced) and prints one JSON object per measurement:\n"
    "name, library, transport, ranks, size (bytes), median, p99, min, max, unit, iterations,\n"
    "cpu_us (CPU time of all the world's processes per iteration, user + system); a\n"
    "benchmark that fails gives {name, library, transport, ranks, error} instead, the others go\n"
    "on, and the exit status is 1. Each benchmark runs in a world of its own.\n"
    "  --quick        tiny sizes and few iterations (proves every benchmark runs)\n"
    "  --json FILE    write the JSON lines to FILE and a readable line per measurement to stdout\n"
    "  --only NAMES   comma-separated patterns or the issue's letters:\n"
    "                 dict_roundtrip (a), dict_one_way (b), send_allgather (c), all_gather,\n"
    "                 all_reduce, reduce_scatter and broadcast (d), broadcast_object (e),\n"
    "                 p2p_latency (f), p2p_donated, dict_roundtrip_pairs (a on 4 and 16 ranks\n"
    "                 in pairs), idle_wait (a parked wait's CPU; run again with spin 0)\n"
    "  --transport L  comma-separated subset of inproc,shm,tcp (default: all three)\n"
    "  --timeout-s S  bound on each benchmark's world (default 300, 120 with --quick)\n"
    "  --spin-us U    how long a waiting rank spins before it parks, given to every world as\n"
    "                 RANKMESH_SPIN_US (default: the environment's, else the runtime's 50)\n";

const std::map<std::string, std::vector<std::string>> kLetters = {
    {"a", {"dict_roundtrip"}}, {"b", {"dict_one_way"}},     {"c", {"send_allgather"}},
    {"d", {"all_gather", "all_reduce", "reduce_scatter", "broadcast"}},
    {"e", {"broadcast_object"}}, {"f", {"p2p_latency"}},
};
const std::set<std::string> kPatterns = {
    "dict_roundtrip", "dict_one_way",     "send_allgather", "all_gather",
    "all_reduce",     "reduce_scatter",   "broadcast",      "broadcast_object",
    "p2p_latency",    "p2p_donated",      "idle_wait",      "dict_roundtrip_pairs"};

// A line of the worker's output file that reports a failure rather than a measurement.
constexpr const char* kErrorPrefix = "error: ";

// Blocking calls give up after this (a hang ends a benchmark, not the run).
std::chrono::milliseconds bench_timeout() { return scaled_timeout(std::chrono::seconds(15)); }

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// The JSON line of a benchmark that failed: no numbers, the reason instead.
std::string failure_json(const std::string& pattern, const std::string& transport, int ranks,
                         const std::string& error) {
  return "{\"name\": \"" + pattern + "\", \"library\": \"rankmesh\", \"transport\": \"" +
         transport + "\", \"ranks\": " + std::to_string(ranks) + ", \"error\": " +
         json_string(error) + "}";
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) items.push_back(item);
  return items;
}

std::string join_list(const std::set<std::string>& items) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "" : ",") + item;
  return text;
}

std::set<std::string> parse_only(const std::optional<std::string>& text) {
  std::set<std::string> only;
  if (!text) return only;
  for (const std::string& item : split_list(*text)) {
    if (auto it = kLetters.find(item); it != kLetters.end()) {
      only.insert(it->second.begin(), it->second.end());
    } else if (kPatterns.count(item)) {
      only.insert(item);
    } else {
      throw UsageError("--only: unknown benchmark '" + item + "' (see rankmesh bench --help)");
    }
  }
  if (only.empty()) throw UsageError("--only needs at least one benchmark");
  return only;
}

std::string self_path() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) throw std::system_error(errno, std::generic_category(), "readlink /proc/self/exe");
  return std::string(path, static_cast<std::size_t>(n));
}

bool placed_by_launcher() {
  for (const char* name : {"RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"})
    if (const char* value = std::getenv(name); value && *value) return true;
  return false;
}

void log_line(const std::string& line) {
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  std::fprintf(stderr, "%s\n", line.c_str());
}

// --spin-us reaches every world as RANKMESH_SPIN_US, which would otherwise override it.
constexpr const char* kSpinVariable = "RANKMESH_SPIN_US";

// Sets RANKMESH_SPIN_US to `spin` (when given) for its lifetime, then puts back what was there.
class SpinEnvironment {
public:
  explicit SpinEnvironment(const std::optional<std::chrono::microseconds>& spin) {
    if (!spin) return;
    if (const char* value = std::getenv(kSpinVariable)) saved_ = value;
    setenv(kSpinVariable, std::to_string(spin->count()).c_str(), 1);
    set_ = true;
  }
  ~SpinEnvironment() {
    if (!set_) return;
    if (saved_) setenv(kSpinVariable, saved_->c_str(), 1);
    else unsetenv(kSpinVariable);
  }
  SpinEnvironment(const SpinEnvironment&) = delete;
  SpinEnvironment& operator=(const SpinEnvironment&) = delete;

private:
  bool set_ = false;
  std::optional<std::string> saved_;
};

// Places the calling thread, rank `rank` of `ranks` on this node, as mpirun places the MPI side of
// the comparison (scripts/bench.sh): a world of at most 2 ranks that fit the cores this process
// may use gets a core per rank (mpirun binds 2 ranks to cores; more to sockets, or none
// oversubscribed: those are left to the scheduler). Unbound, two ranks that the scheduler puts
// on one core pay a switch per message (~15 us a round trip on the 2-core machine while others
// build) where MPI's pay none. Launched ranks bind their process, inproc ranks their own thread;
// threads the caller starts afterwards inherit the core.
void bind_like_mpirun(int rank, int ranks) {
  cpu_set_t allowed;
  if (ranks > 2 || sched_getaffinity(0, sizeof allowed, &allowed) != 0 ||
      ranks > CPU_COUNT(&allowed) || rank < 0 || rank >= ranks)
    return;
  int seen = -1;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed) || ++seen != rank) continue;
    cpu_set_t mine;
    CPU_ZERO(&mine);
    CPU_SET(cpu, &mine);
    sched_setaffinity(0, sizeof mine, &mine);  // a hint: unbound, the numbers are only noisier
    return;
  }
}

// A world of `ranks` inside this process; the measurements of rank 0. `timeout` aborts it.
std::vector<bench::Measurement> run_inproc(int ranks, const bench::Settings& settings,
                                           std::chrono::seconds timeout, std::string& error) {
  const SpinEnvironment spin(settings.spin);
  RuntimeOptions options;
  options.world_size = ranks;
  bench::Settings one_process = settings;
  one_process.one_process = true;
  options.timeout = bench_timeout();
  options.log = log_line;
  Runtime runtime(options);
  std::vector<bench::Measurement> results;
  std::vector<std::string> errors(static_cast<std::size_t>(ranks));
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock lock(mutex);
    if (!finished.wait_for(lock, timeout, [&] { return done; }))
      runtime.abort("the benchmark ran longer than " + std::to_string(timeout.count()) + " s");
  });
  std::vector<std::thread> threads;
  for (int r : runtime.local_ranks())
    threads.emplace_back([&, r] {
      bind_like_mpirun(r, ranks);  // the rank's own thread, as a launched rank's process is
      try {
        bench::run_patterns(runtime.rank(r), one_process,
                            [&](const bench::Measurement& m) { results.push_back(m); });
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
        runtime.abort(std::string("rank ") + std::to_string(r) + " failed: " + e.what());
      }
    });
  for (auto& t : threads) t.join();
  {
    std::lock_guard lock(mutex);
    done = true;
  }
  finished.notify_all();
  watchdog.join();
  for (int r = 0; r < ranks && error.empty(); ++r)
    if (!errors[static_cast<std::size_t>(r)].empty())
      error = "rank " + std::to_string(r) + ": " + errors[static_cast<std::size_t>(r)];
  return results;
}

// A world of `ranks` processes under `rankmesh launch`; the JSON lines rank 0 wrote.
std::vector<std::string> run_launched(int ranks, const bench::Settings& settings,
                                      std::chrono::seconds timeout, std::string& error) {
  char out_path[] = "/tmp/rankmesh-bench-XXXXXX";
  const int fd = mkstemp(out_path);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "mkstemp");
  close(fd);
  const std::string self = self_path();
  std::vector<std::string> args = {self, "launch", "--nproc-per-node", std::to_string(ranks),
                                   "--timeout-s", std::to_string(timeout.count()), "--",
                                   self, "bench", "--worker", out_path};
  if (settings.quick) args.push_back("--quick");
  if (!settings.only.empty()) {
    args.push_back("--only");
    args.push_back(join_list(settings.only));
  }
  if (settings.spin) {
    args.push_back("--spin-us");
    args.push_back(std::to_string(settings.spin->count()));
  }
  std::vector<std::string> env;
  const std::string spin_prefix = std::string(kSpinVariable) + "=";
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "RANKMESH_TRANSPORT=", 19) != 0 &&
        !(settings.spin && std::strncmp(*e, spin_prefix.c_str(), spin_prefix.size()) == 0))
      env.emplace_back(*e);
  env.push_back("RANKMESH_TRANSPORT=" + settings.transport);
  if (settings.spin) env.push_back(spin_prefix + std::to_string(settings.spin->count()));
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    dup2(2, 1);  // the ranks' own output goes to stderr; stdout carries measurements only
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::vector<std::string> lines;
  std::ifstream in(out_path);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(kErrorPrefix, 0) == 0) {  // every rank's, the cause usually first
      error += (error.empty() ? "" : " | ") + line.substr(std::strlen(kErrorPrefix));
    } else if (!line.empty()) {
      lines.push_back(line);
    }
  }
  unlink(out_path);
  if ((!WIFEXITED(status) || WEXITSTATUS(status) != 0) && error.empty())
    error = "rankmesh launch exited with status " +
            std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  return lines;
}

// One process's rank of a launched world (`rankmesh bench --worker FILE`).
int worker(const std::string& out_path, const bench::Settings& given) {
  // Before the runtime starts its threads, which inherit the core.
  const char* local_rank = std::getenv("LOCAL_RANK");
  const char* local_world = std::getenv("LOCAL_WORLD_SIZE");
  if (local_rank != nullptr && local_world != nullptr)
    bind_like_mpirun(std::atoi(local_rank), std::atoi(local_world));
  bench::Settings settings = given;
  const char* transport = std::getenv("RANKMESH_TRANSPORT");
  settings.transport = transport && *transport ? transport : "auto";
  RuntimeOptions options;  // the spin: RANKMESH_SPIN_US, set by the driver
  options.timeout = bench_timeout();
  options.log = log_line;
  Runtime runtime(options);
  const int rank = runtime.local_ranks().front();
  try {
    bench::run_patterns(runtime.rank(rank), settings, [&](const bench::Measurement& m) {
      std::ofstream out(out_path, std::ios::app);  // other ranks may append their errors
      if (!(out << bench::to_json(m) << '\n').flush())
        throw std::runtime_error("cannot write " + out_path);
    });
  } catch (const std::exception& e) {
    const std::string why = "rank " + std::to_string(rank) + ": " + e.what();
    log_line(why);
    std::ofstream(out_path, std::ios::app) << kErrorPrefix << why << '\n';  // the driver reports it
    runtime.abort(e.what());
    return 1;
  }
  return 0;
}

std::string readable(const bench::Measurement& m) {
  char line[256];
  if (m.unit.empty()) {  // a failure
    std::snprintf(line, sizeof line, "%-22s %-6s %d ranks  FAILED", m.name.c_str(), m.transport.c_str(), m.ranks);
    return line;
  }
  std::snprintf(line, sizeof line,
                "%-22s %-6s %2d ranks %10lld B  median %10.4g %-6s p99 %.4g (min %.4g, max %.4g) "
                "x%lld, CPU %.4g us/iteration",
                m.name.c_str(), m.transport.c_str(), m.ranks, static_cast<long long>(m.size),
                m.median, m.unit.c_str(), m.p99, m.min, m.max, static_cast<long long>(m.iterations),
                m.cpu_us);
  return line;
}

// Reads back a line of bench::to_json (our own format, one flat object).
bench::Measurement from_json(const std::string& line) {
  auto field = [&](const std::string& key) {
    const std::string tag = "\"" + key + "\": ";
    const auto at = line.find(tag);
    if (at == std::string::npos) return std::string();
    auto begin = at + tag.size();
    auto end = line.find_first_of(",}", begin);
    std::string value = line.substr(begin, end - begin);
    if (value.size() >= 2 && value.front() == '"') value = value.substr(1, value.size() - 2);
    return value;
  };
  bench::Measurement m;
  m.name = field("name");
  m.transport = field("transport");
  m.ranks = std::atoi(field("ranks").c_str());
  m.size = std::atoll(field("size").c_str());
  m.median = std::atof(field("median").c_str());
  m.p99 = std::atof(field("p99").c_str());
  m.cpu_us = std::atof(field("cpu_us").c_str());
  m.min = std::atof(field("min").c_str());
  m.max = std::atof(field("max").c_str());
  m.unit = field("unit");
  m.iterations = std::atoll(field("iterations").c_str());
  return m;
}

}  // namespace

int bench_command(const std::vector<std::string>& argv) {
  if (!argv.empty() && (argv[0] == "--help" || argv[0] == "-h")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  Arguments args(argv, {"--json", "--only", "--transport", "--timeout-s", "--worker", "--spin-us"},
                 {"--quick"});
  bench::Settings settings;
  settings.quick = args.has("--quick");
  // The spin the worlds run with, so that the measurements can say which (idle_wait's _spin0).
  auto spin = args.text("--spin-us");
  const char* spin_variable = std::getenv(kSpinVariable);
  if (!spin && spin_variable && *spin_variable) spin = spin_variable;
  if (spin) {
    const int us = std::atoi(spin->c_str());
    if (us < 0 || std::to_string(us) != *spin)
      throw UsageError("--spin-us (or RANKMESH_SPIN_US) must be a whole number of microseconds, "
                       "got '" + *spin + "'");
    settings.spin = std::chrono::microseconds(us);
  }
  settings.only = parse_only(args.text("--only"));
  if (auto out = args.text("--worker")) return worker(*out, settings);

  if (placed_by_launcher())
    throw UsageError("runs without a launcher: it starts its own worlds (unset RANK, "
                     "OMPI_COMM_WORLD_RANK, SLURM_PROCID)");
  std::vector<std::string> transports = {"inproc", "shm", "tcp"};
  if (auto list = args.text("--transport")) {
    transports = split_list(*list);
    for (const auto& t : transports)
      if (t != "inproc" && t != "shm" && t != "tcp")
        throw UsageError("--transport: '" + t + "' is none of inproc, shm, tcp");
    if (transports.empty()) throw UsageError("--transport needs at least one transport");
  }
  const int seconds = args.positive("--timeout-s").value_or(settings.quick ? 120 : 300);
  const auto timeout = std::chrono::duration_cast<std::chrono::seconds>(
      scaled_timeout(std::chrono::seconds(seconds)));

  std::FILE* json = stdout;
  std::FILE* file = nullptr;
  if (auto path = args.text("--json")) {
    file = std::fopen(path->c_str(), "w");
    if (!file) throw std::system_error(errno, std::generic_category(), "cannot write " + *path);
    json = file;
  }
  // One world per benchmark, so that one that fails (its error goes into the output after the
  // numbers it took) costs no other its measurements.
  int failures = 0;
  auto run_world = [&](const std::string& pattern, int ranks, const bench::Settings& one) {
    const std::string& transport = one.transport;
    std::fprintf(stderr, "rankmesh bench: %s, %s, %d ranks%s\n", pattern.c_str(),
                 transport.c_str(), ranks, one.quick ? " (quick)" : "");
    std::string error;
    std::vector<std::string> lines;
    try {
      if (transport == "inproc") {
        for (const auto& m : run_inproc(ranks, one, timeout, error))
          lines.push_back(bench::to_json(m));
      } else {
        lines = run_launched(ranks, one, timeout, error);
      }
    } catch (const Error& e) {  // the world did not start
      error = e.what();
    }
    if (!error.empty()) {
      std::fprintf(stderr, "rankmesh bench: %s on %s with %d ranks failed: %s\n",
                   pattern.c_str(), transport.c_str(), ranks, error.c_str());
      lines.push_back(failure_json(pattern, transport, ranks, error));  // after what it took
      ++failures;
    }
    for (const auto& line : lines) {
      std::fprintf(json, "%s\n", line.c_str());
      if (file) std::printf("%s\n", readable(from_json(line)).c_str());
    }
    std::fflush(json);
    std::fflush(stdout);
  };
  for (const std::string& transport : transports) {
    for (int ranks : {2, 4, 16}) {
      settings.transport = transport;
      for (const std::string& pattern : bench::patterns_for(ranks, settings)) {
        bench::Settings one = settings;
        one.only = {pattern};
        run_world(pattern, ranks, one);
        if (pattern == "idle_wait" && !(settings.spin && settings.spin->count() == 0)) {
          one.spin = std::chrono::microseconds(0);  // what the spin costs: the same, no spin
          run_world(pattern, ranks, one);
        }
      }
    }
  }
  if (file) std::fclose(file);
  return failures ? 1 : 0;
}

}  // namespace rankmesh::tool
