// rankmesh-ops-check: runs every GroupCoordinator operation on deterministic inputs and prints
// one digest line per rank and operation, so a test can compare a launched multi-process world
// with the in-process runtime line by line. With --loop it keeps running all_reduce (or, with
// --op broadcast_object, rank 0's broadcast_object) until stopped, for the failure tests;
// --payload sets its size. --world N sets the world size (it must match a launcher's). Runs every rank in this process unless a launcher placed it.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rankmesh/error.hpp"
#include "rankmesh/runtime.hpp"

using namespace rankmesh;

namespace {

std::mutex g_print;

// FNV-1a over the bytes and the shape: equal digests mean equal tensors.
std::string digest(const Tensor& t) {
  if (!t.defined()) return "undefined";
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&](const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  for (std::int64_t d : t.shape()) mix(&d, sizeof d);
  mix(t.data(), t.nbytes());
  char text[32];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return to_string(t.shape()) + " " + text;
}

Tensor input(int rank, Shape shape, float scale = 1.0f) {
  Tensor t = Tensor::empty(shape, DType::f32);
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t.data_as<float>()[i] = scale * static_cast<float>(rank * 1000 + i) + 0.25f;
  return t;
}

void say(int rank, const std::string& what, const std::string& result) {
  std::lock_guard lock(g_print);
  std::printf("rank %d: %s = %s\n", rank, what.c_str(), result.c_str());
}

void check_all(ParallelState& s) {
  const int r = s.rank(), n = s.world_size();
  GroupCoordinator& g = s.world();
  say(r, "all_reduce sum", digest(g.all_reduce(input(r, {5, 3}))));
  say(r, "all_reduce max", digest(g.all_reduce(input(r, {7}), ReduceOp::max)));
  say(r, "all_gather dim 1", digest(g.all_gather(input(r, {2, 3}), 1)));
  say(r, "all_gather dim 0", digest(g.all_gather(input(r, {3, 5}), 0)));
  say(r, "all_gather dim 0, large", digest(g.all_gather(input(r, {64, 1024}), 0)));
  say(r, "all_gatherv", digest(g.all_gatherv(input(r, {r + 1, 2}), 0)));
  say(r, "reduce_scatter", digest(g.reduce_scatter(input(r, {2 * n, 3}), 0)));
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(n));
  std::int64_t rows = 0;
  for (int j = 0; j < n; ++j) rows += sizes[static_cast<std::size_t>(j)] = j % 3;
  say(r, "reduce_scatterv", digest(g.reduce_scatterv(input(r, {rows, 2}), sizes, 0)));
  say(r, "gather", digest(g.gather(input(r, {1, 4}), n - 1, 0)));
  say(r, "broadcast", digest(g.broadcast(input(r, {9}), n - 1)));
  g.barrier();
  std::vector<std::int64_t> counts(static_cast<std::size_t>(n));
  rows = 0;
  for (int j = 0; j < n; ++j) rows += counts[static_cast<std::size_t>(j)] = j + 1;
  say(r, "all_to_all", digest(g.all_to_all(input(r, {rows, 2}), counts)));
  Value object = g.broadcast_object(r == 0 ? Value(List{Value("plan"), Value(7)}) : Value(None{}), 0);
  say(r, "broadcast_object", object.is<List>() ? "list of " + std::to_string(object.as<List>().size()) : "wrong");
  {  // from every source in turn; more objects than a broadcast ring has slots, one beyond a slot
    std::uint64_t h = 1469598103934665603ull;
    for (int round = 0; round < 12; ++round) {
      const int src = round % n;
      const std::size_t size = round == 5 ? std::size_t{600} << 10 : static_cast<std::size_t>(round) * 37;
      Value sent = r == src ? Value(List{Value(round), Value(std::string(size, static_cast<char>('a' + round)))})
                            : Value(None{});
      Value got = g.broadcast_object(sent, src);
      if (!got.is<List>() || got.as<List>().size() != 2) {
        h = 0;
        break;
      }
      for (char c : got.as<List>()[1].as<std::string>()) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
      h = (h ^ static_cast<std::uint64_t>(got.as<List>()[0].as<std::int64_t>())) * 1099511628211ull;
    }
    char text[32];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
    say(r, "broadcast_object from every rank", text);
  }
  if (n > 1) {
    TensorDict dict{{"hidden_states", input(r, {4, 8})}, {"empty", Tensor::empty({0, 3}, DType::f16)},
                    {"step", r}};
    TensorDict got;
    if (r % 2 == 0) {
      g.send_tensor_dict(dict);
      got = g.recv_tensor_dict();
    } else {
      got = g.recv_tensor_dict();
      g.send_tensor_dict(dict);
    }
    say(r, "recv_tensor_dict", digest(got.at("hidden_states").as<Tensor>()) + " step " +
                                   std::to_string(got.at("step").as<std::int64_t>()) + " empty " +
                                   to_string(got.at("empty").as<Tensor>().shape()));
    TensorDict b = g.broadcast_tensor_dict(r == 0 ? dict : TensorDict{}, 0);
    say(r, "broadcast_tensor_dict", digest(b.at("hidden_states").as<Tensor>()));
    Value sent = Value(List{Value(r), Value("from")});
    Value back;
    if (r % 2 == 0) {
      g.send_object(sent, (r + 1) % n);
      back = g.recv_object((r + n - 1) % n);
    } else {
      back = g.recv_object((r + n - 1) % n);
      g.send_object(sent, (r + 1) % n);
    }
    say(r, "recv_object", std::to_string(back.as<List>()[0].as<std::int64_t>()));
  }
  if (n % 2 == 0) {  // send-allgather: pp 2 x tp n/2
    s.initialize_model_parallel(n / 2, 2);
    // "large" is big enough that the runtime slices it where the stages sit on two nodes.
    TensorDict dict{{"hidden_states", input(0, {n / 2, 6})}, {"large", input(0, {n / 2, 1 << 18})}, {"step", 3}};
    if (s.pp().is_first_rank()) {
      s.pp().send_tensor_dict(dict, std::nullopt, &s.tp());
    } else {
      TensorDict got = s.pp().recv_tensor_dict(std::nullopt, &s.tp());
      say(r, "send-allgather", digest(got.at("hidden_states").as<Tensor>()) + " " + digest(got.at("large").as<Tensor>()));
    }
    s.destroy_model_parallel();
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool loop = false;
  int world = 4;
  std::string loop_op = "all_reduce";
  std::int64_t payload = 1024;  // floats per all_reduce, or bytes per object, in --loop
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--loop") == 0) {
      loop = true;
    } else if (std::strcmp(argv[i], "--world") == 0 && i + 1 < argc) {
      world = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--payload") == 0 && i + 1 < argc) {
      payload = std::atoll(argv[++i]);
    } else if (std::strcmp(argv[i], "--op") == 0 && i + 1 < argc &&
               (std::strcmp(argv[i + 1], "all_reduce") == 0 ||
                std::strcmp(argv[i + 1], "broadcast_object") == 0)) {
      loop_op = argv[++i];
    } else {
      std::fprintf(stderr, "usage: rankmesh-ops-check [--world N] [--loop [--op all_reduce|broadcast_object] "
                           "[--payload N]]\n");
      return 2;
    }
  }
  RuntimeOptions options;
  options.world_size = world;
  options.log = [](const std::string& line) {
    std::lock_guard lock(g_print);
    std::fprintf(stderr, "%s\n", line.c_str());
  };
  int status = 0;
  try {
    Runtime runtime(options);
    std::vector<std::thread> threads;
    std::vector<std::string> errors(static_cast<std::size_t>(runtime.world_size()));
    for (int r : runtime.local_ranks())
      threads.emplace_back([&, r] {
        try {
          ParallelState& s = runtime.rank(r);
          if (!loop) return check_all(s);
          std::printf("rank %d: looping (pid %d)\n", r, static_cast<int>(getpid()));
          std::fflush(stdout);
          if (loop_op == "broadcast_object") {  // a scheduler's step output, from rank 0
            const Value step = List{Value("step"), Value(std::string(static_cast<std::size_t>(payload), 'x'))};
            while (true) s.world().broadcast_object(r == 0 ? step : Value(None{}), 0);
          }
          Tensor data = input(r, {payload});
          while (true) s.world().all_reduce(data);
        } catch (const std::exception& e) {
          errors[static_cast<std::size_t>(r)] = e.what();
          runtime.abort(e.what());
        }
      });
    for (auto& t : threads) t.join();
    for (int r : runtime.local_ranks())
      if (!errors[static_cast<std::size_t>(r)].empty()) {
        std::fprintf(stderr, "rank %d failed: %s\n", r, errors[static_cast<std::size_t>(r)].c_str());
        status = 1;
      }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rankmesh-ops-check: %s\n", e.what());
    return 1;
  }
  std::fflush(stdout);
  return status;
}
