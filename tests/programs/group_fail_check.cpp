// rankmesh-group-fail-check: a group failure notice (issue 13, collective consensus) across a
// world. Every rank lays out one tp group of the whole world; rank 0 fails it
// (RankContext::fail_group, as a collective that saw the members diverge does) while the others
// wait in a broadcast from rank 1 (rank 1 from rank 2): none of them waits for rank 0, so only
// the notice can end their wait. Each checks that its wait failed with the reason well before
// the timeout, that a later call on the group fails at once, that the world group still works
// and that a rebuilt tp group works; prints "rank R: notice after S s: <error>" and
// "rank R: ok", or names what differs on stderr with exit status 1. Runs every rank in this
// process unless a launcher placed it (--world N, >= 3, must then match the launcher's).
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "coordinator/group_state.hpp"
#include "rank_context.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/runtime.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

namespace {

std::mutex g_print;
constexpr const char* kReason = "rank 0 saw the group's collectives diverge (group-fail-check)";
constexpr double kTimeoutS = 30;

void say(const std::string& line) {
  std::lock_guard lock(g_print);
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

// A coordinator's state (what a detecting collective reaches as call.group()): GroupCoordinator
// is standard-layout with its Impl pointer as its only member.
GroupState& state_of(GroupCoordinator& group) {
  static_assert(std::is_standard_layout_v<GroupCoordinator>);
  return *reinterpret_cast<std::unique_ptr<GroupCoordinator::Impl>&>(group);
}

Tensor filled(float value) {
  Tensor t = Tensor::empty({4}, DType::f32);
  for (int i = 0; i < 4; ++i) t.data_as<float>()[i] = value;
  return t;
}

double since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void expect(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error(what);
}

void run_rank(ParallelState& state) {
  const int rank = state.rank();
  const int world = state.world_size();
  state.initialize_model_parallel(world);
  GroupCoordinator& tp = state.tp();
  expect(tp.all_reduce(filled(1)).data_as<float>()[0] == static_cast<float>(world), "warm-up sum");
  state.world().barrier();
  if (rank == 0) {
    std::this_thread::sleep_for(1s);  // the others are inside their broadcasts by now
    GroupState& group = state_of(tp);
    group.rank_context->fail_group(group.id, group.members, kReason);
    say("rank 0: failed tp");
  } else {
    Tensor t = filled(static_cast<float>(rank));
    const auto start = std::chrono::steady_clock::now();
    std::string error;
    try {
      tp.broadcast(t, rank == 1 ? 2 : 1);
    } catch (const Error& e) {
      error = e.what();
      expect(e.code() == Errc::mismatch, "the wait failed with another code: " + error);
    }
    const double waited = since(start);
    say("rank " + std::to_string(rank) + ": notice after " + std::to_string(waited) + " s: " + error);
    expect(error.find("broadcast: the group failed: " + std::string(kReason)) != std::string::npos,
           "the wait did not fail with the reason: '" + error + "'");
  }
  std::string later;
  try {
    tp.all_reduce(filled(1));
  } catch (const Error& e) {
    later = e.what();
  }
  expect(later.find("all_reduce: the group failed: ") != std::string::npos,
         "a later call on the failed group: '" + later + "'");
  expect(state.world().all_reduce(filled(1)).data_as<float>()[0] == static_cast<float>(world),
         "the world group after the failure");
  state.destroy_model_parallel();
  state.initialize_model_parallel(world);
  expect(state.tp().all_reduce(filled(2)).data_as<float>()[0] == static_cast<float>(2 * world),
         "the rebuilt tp group");
  state.world().barrier();
  say("rank " + std::to_string(rank) + ": ok");
}

}  // namespace

int main(int argc, char** argv) {
  int world = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--world") == 0 && i + 1 < argc) {
      world = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: rankmesh-group-fail-check [--world N]\n");
      return 2;
    }
  }
  if (world < 3) {
    std::fprintf(stderr, "rankmesh-group-fail-check: the world needs 3 ranks at least\n");
    return 2;
  }
  RuntimeOptions options;
  options.world_size = world;
  options.timeout = std::chrono::milliseconds(static_cast<long>(kTimeoutS * 1000));
  options.log = [](const std::string& line) {
    std::lock_guard lock(g_print);
    std::fprintf(stderr, "%s\n", line.c_str());
  };
  int status = 0;
  try {
    Runtime runtime(options);
    std::vector<std::string> errors(static_cast<std::size_t>(runtime.world_size()));
    std::vector<std::thread> threads;
    for (int r : runtime.local_ranks())
      threads.emplace_back([&, r] {
        try {
          run_rank(runtime.rank(r));
        } catch (const std::exception& e) {
          errors[static_cast<std::size_t>(r)] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    for (int r : runtime.local_ranks())
      if (!errors[static_cast<std::size_t>(r)].empty()) {
        std::fprintf(stderr, "rank %d failed: %s\n", r, errors[static_cast<std::size_t>(r)].c_str());
        status = 1;
      }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rankmesh-group-fail-check: %s\n", e.what());
    return 1;
  }
  return status;
}
