// An engine that handles SIGUSR2 itself keeps its handler when a tracing runtime starts: on the
// signal both run — the engine's handler and rankmesh's dump of its rings (tracer.cpp chains to
// the handler it found). Its own process, so that the engine's handler is installed before any
// runtime's. Exits 0 when both ran within 10 s, 1 saying what did not; the trace folder it makes
// is removed either way.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <string>
#include <thread>

#include "rankmesh/rankmesh.hpp"

namespace {

volatile std::sig_atomic_t engine_calls = 0;
void engine_handler(int) { engine_calls = engine_calls + 1; }

// Whether both ran after one SIGUSR2, with the trace files going to `dir`.
bool both_run(const std::filesystem::path& dir) {
  struct sigaction action {};
  action.sa_handler = engine_handler;
  sigemptyset(&action.sa_mask);
  if (::sigaction(SIGUSR2, &action, nullptr) != 0) return false;

  rankmesh::RuntimeOptions options;
  options.world_size = 1;
  options.trace_dir = dir.string();
  rankmesh::Runtime runtime(options);
  runtime.rank(0).world().barrier();
  std::raise(SIGUSR2);

  const auto dump = dir / "rank-0.dump-0.trace.json";
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!std::filesystem::exists(dump) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  bool ok = true;
  if (engine_calls != 1) {
    std::fprintf(stderr, "the engine's SIGUSR2 handler ran %d times, not once\n",
                 static_cast<int>(engine_calls));
    ok = false;
  }
  if (!std::filesystem::exists(dump)) {
    std::fprintf(stderr, "no dump at %s within 10 s of SIGUSR2\n", dump.c_str());
    ok = false;
  }
  return ok;
}

}  // namespace

int main() {
  std::string pattern = (std::filesystem::temp_directory_path() / "rankmesh-signal-chain-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::filesystem::path dir = pattern;
  const bool ok = both_run(dir);
  std::filesystem::remove_all(dir);
  return ok ? 0 : 1;
}
