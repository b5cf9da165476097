// rankmesh-ops-check: runs every GroupCoordinator operation — in the world and in the tp, pp, dp
// and ep groups, blocking and asynchronous — on deterministic inputs, checks each result against
// the value computed here from the members' inputs (a difference is named on stderr and the exit
// status is 1), and prints one digest line per rank and operation, so a test can also compare a
// launched multi-process world with the in-process runtime line by line. With --loop it keeps
// running all_reduce (or, with --op broadcast_object, rank 0's broadcast_object) until stopped,
// for the failure tests; --payload sets its size. --world N sets the world size (it must match a
// launcher's). Runs every rank in this process unless a launcher placed it.
#include <unistd.h>

#include <algorithm>
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

// FNV-1a: mix() bytes in, text() the 16 hex digits.
class Fnv {
public:
  void mix(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) h_ = (h_ ^ p[i]) * 1099511628211ull;
  }
  std::string text() const {
    char out[32];
    std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h_));
    return out;
  }

private:
  std::uint64_t h_ = 1469598103934665603ull;
};

// Over the shape and the bytes: equal digests mean equal tensors.
std::string digest(const Tensor& t) {
  if (!t.defined()) return "undefined";
  Fnv fnv;
  for (std::int64_t d : t.shape()) fnv.mix(&d, sizeof d);
  fnv.mix(t.data(), t.nbytes());
  return to_string(t.shape()) + " " + fnv.text();
}

// Element i of rank `rank`'s input: the one formula both the inputs and the expected values use.
float input_value(int rank, std::int64_t i) { return static_cast<float>(rank * 1000 + i) + 0.25f; }

Tensor input(int rank, Shape shape) {
  Tensor t = Tensor::empty(shape, DType::f32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = input_value(rank, i);
  return t;
}

void say(int rank, const std::string& what, const std::string& result) {
  std::lock_guard lock(g_print);
  std::printf("rank %d: %s = %s\n", rank, what.c_str(), result.c_str());
}

// What an operation must return, computed here from the members' inputs with plain loops (no
// runtime code), so that a world is checked against the definition of each operation and not
// only against the in-process runtime, which could share a defect.
struct Expected {
  Shape shape;
  std::vector<float> values;
  bool undefined = false;  // gather's result on a non-root member
};

Expected undefined_result() { return {{}, {}, true}; }

// Rows [first, first + count) along dim 0 of `rank`'s input of shape `shape`.
std::vector<float> input_rows(int rank, const Shape& shape, std::int64_t first, std::int64_t count) {
  const std::int64_t row = shape.numel() / std::max<std::int64_t>(shape[0], 1);
  std::vector<float> out;
  for (std::int64_t i = first * row; i < (first + count) * row; ++i) out.push_back(input_value(rank, i));
  return out;
}

// Elementwise combination of the members' inputs in ascending member order, as documented.
Expected reduced(const Group& members, const Shape& shape, ReduceOp op) {
  Expected e{shape, input_rows(members[0], shape, 0, shape[0]), false};
  for (std::size_t m = 1; m < members.size(); ++m)
    for (std::int64_t i = 0; i < shape.numel(); ++i) {
      const float x = input_value(members[m], i);
      float& acc = e.values[static_cast<std::size_t>(i)];
      acc = op == ReduceOp::sum ? acc + x : op == ReduceOp::max ? std::max(acc, x) : std::min(acc, x);
    }
  return e;
}

// The members' 2-D inputs of shape `part` concatenated along `dim` (0 or 1).
Expected concatenated(const Group& members, const Shape& part, int dim) {
  const auto count = static_cast<std::int64_t>(members.size());
  Expected e{dim == 0 ? Shape{part[0] * count, part[1]} : Shape{part[0], part[1] * count}, {}, false};
  if (dim == 0) {
    for (int m : members) {
      auto rows = input_rows(m, part, 0, part[0]);
      e.values.insert(e.values.end(), rows.begin(), rows.end());
    }
  } else {
    for (std::int64_t row = 0; row < part[0]; ++row)
      for (int m : members)
        for (std::int64_t col = 0; col < part[1]; ++col)
          e.values.push_back(input_value(m, row * part[1] + col));
  }
  return e;
}

// Rows [first, first + count) of an expected 2-D result.
Expected row_slice(const Expected& whole, std::int64_t first, std::int64_t count) {
  const std::int64_t row = whole.shape[1];
  const auto begin = whole.values.begin() + first * row;
  return {Shape{count, row}, std::vector<float>(begin, begin + count * row), false};
}

Expected whole_input(int rank, const Shape& shape) {
  return {shape, input_rows(rank, shape, 0, shape[0]), false};
}

// Checks the result against the expectation (reported on stderr, failing the program) and
// prints its digest for the comparison with other runs.
class Checker {
public:
  explicit Checker(int rank) : rank_(rank) {}
  bool ok() const { return failures_ == 0; }

  void tensor(const std::string& what, const Tensor& got, const Expected& want, const std::string& extra = "") {
    say(rank_, what, digest(got) + extra);
    if (want.undefined || !got.defined()) {
      if (want.undefined != !got.defined())
        fail(what, got.defined() ? "a tensor where none was expected" : "no tensor");
      return;
    }
    if (got.dtype() != DType::f32 || !(got.shape() == want.shape))
      return fail(what, "shape " + to_string(got.shape()) + ", expected " + to_string(want.shape));
    const float* values = got.data_as<float>();
    for (std::size_t i = 0; i < want.values.size(); ++i)
      if (std::memcmp(&values[i], &want.values[i], sizeof(float)) != 0)
        return fail(what, "element " + std::to_string(i) + " is " + std::to_string(values[i]) + ", expected " +
                              std::to_string(want.values[i]));
  }

  void value(const std::string& what, const Value& got, const Value& want) {
    say(rank_, what, render(got));
    if (!(got == want)) fail(what, render(got) + ", expected " + render(want));
  }

  void truth(const std::string& what, bool holds, const std::string& detail) {
    if (!holds) fail(what, detail);
  }

  // The whole object (long strings by length and digest), so that objects that differ print
  // differently: None, integers, strings and lists, the kinds ops_check broadcasts.
  static std::string render(const Value& v) {
    if (v.is<None>()) return "None";
    if (v.is<std::int64_t>()) return std::to_string(v.as<std::int64_t>());
    if (v.is<std::string>()) {
      const std::string& s = v.as<std::string>();
      if (s.size() <= 16) return "'" + s + "'";
      Fnv fnv;
      fnv.mix(s.data(), s.size());
      return "<" + std::to_string(s.size()) + " chars, fnv " + fnv.text() + ">";
    }
    if (v.is<List>()) {
      std::string out = "[";
      for (const Value& item : v.as<List>()) out += (out.size() > 1 ? ", " : "") + render(item);
      return out + "]";
    }
    return "<unexpected type>";
  }

private:
  void fail(const std::string& what, const std::string& detail) {
    ++failures_;
    std::lock_guard lock(g_print);
    std::fprintf(stderr, "rank %d: %s: %s\n", rank_, what.c_str(), detail.c_str());
  }

  int rank_;
  int failures_ = 0;
};

// Worlds of 8 get real data-parallel groups of 2 (tp 2 x pp 2 x dp 2); smaller ones keep dp 1,
// the rest of the world forming vLLM's outer axis.
int data_parallel_size(int world) { return world % 8 == 0 ? 2 : 1; }

Group first_members(int count) {
  Group members;
  for (int i = 0; i < count; ++i) members.push_back(i);
  return members;
}

void check_world(ParallelState& s, Checker& check) {
  const int r = s.rank(), n = s.world_size();
  GroupCoordinator& g = s.world();
  const Group all = first_members(n);
  check.tensor("all_reduce sum", g.all_reduce(input(r, {5, 3})), reduced(all, {5, 3}, ReduceOp::sum));
  check.tensor("all_reduce max", g.all_reduce(input(r, {7}), ReduceOp::max), reduced(all, {7}, ReduceOp::max));
  check.tensor("all_gather dim 1", g.all_gather(input(r, {2, 3}), 1), concatenated(all, {2, 3}, 1));
  check.tensor("all_gather dim 0", g.all_gather(input(r, {3, 5}), 0), concatenated(all, {3, 5}, 0));
  check.tensor("all_gather dim 0, large", g.all_gather(input(r, {64, 1024}), 0), concatenated(all, {64, 1024}, 0));
  {
    Expected want{Shape{n * (n + 1) / 2, 2}, {}, false};
    for (int j = 0; j < n; ++j) {
      auto rows = input_rows(j, {j + 1, 2}, 0, j + 1);
      want.values.insert(want.values.end(), rows.begin(), rows.end());
    }
    check.tensor("all_gatherv", g.all_gatherv(input(r, {r + 1, 2}), 0), want);
  }
  check.tensor("reduce_scatter", g.reduce_scatter(input(r, {2 * n, 3}), 0),
               row_slice(reduced(all, {2 * n, 3}, ReduceOp::sum), 2 * r, 2));
  {
    std::vector<std::int64_t> sizes(static_cast<std::size_t>(n));
    std::int64_t rows = 0, first = 0;
    for (int j = 0; j < n; ++j) {
      sizes[static_cast<std::size_t>(j)] = j % 3;
      if (j < r) first += j % 3;
      rows += j % 3;
    }
    check.tensor("reduce_scatterv", g.reduce_scatterv(input(r, {rows, 2}), sizes, 0),
                 row_slice(reduced(all, {rows, 2}, ReduceOp::sum), first, r % 3));
  }
  check.tensor("gather", g.gather(input(r, {1, 4}), n - 1, 0),
               r == n - 1 ? concatenated(all, {1, 4}, 0) : undefined_result());
  {
    Tensor filled_in = input(r, {9});  // in place: every rank's own tensor is filled
    check.tensor("broadcast", g.broadcast(filled_in, n - 1), whole_input(n - 1, {9}));
  }
  g.barrier();
  {
    // Rank j sends rank k rows [offset(k), offset(k) + k + 1) of its input, offset(k) = 1 + ... + k.
    std::vector<std::int64_t> counts(static_cast<std::size_t>(n));
    std::int64_t rows = 0;
    for (int j = 0; j < n; ++j) rows += counts[static_cast<std::size_t>(j)] = j + 1;
    Expected want{Shape{n * (r + 1), 2}, {}, false};
    for (int j = 0; j < n; ++j) {
      auto part = input_rows(j, {rows, 2}, r * (r + 1) / 2, r + 1);
      want.values.insert(want.values.end(), part.begin(), part.end());
    }
    check.tensor("all_to_all", g.all_to_all(input(r, {rows, 2}), counts), want);
  }
  const Value plan = List{Value("plan"), Value(7)};
  check.value("broadcast_object", g.broadcast_object(r == 0 ? plan : Value(None{}), 0), plan);
  // From every source in turn; more objects than a broadcast ring has slots, one beyond a slot.
  for (int round = 0; round < 12; ++round) {
    const int src = round % n;
    const std::size_t size = round == 5 ? std::size_t{600} << 10 : static_cast<std::size_t>(round) * 37;
    const Value object = List{Value(round), Value(std::string(size, static_cast<char>('a' + round)))};
    check.value("broadcast_object #" + std::to_string(round) + " from rank " + std::to_string(src),
                g.broadcast_object(r == src ? object : Value(None{}), src), object);
  }
  if (n > 1) {
    const int prev = (r + n - 1) % n;
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
    const Tensor& empty = got.at("empty").as<Tensor>();
    const std::int64_t step = got.at("step").as<std::int64_t>();
    check.tensor("recv_tensor_dict", got.at("hidden_states").as<Tensor>(), whole_input(prev, {4, 8}),
                 " step " + std::to_string(step) + " empty " + to_string(empty.shape()));
    check.truth("recv_tensor_dict", step == prev && empty.shape() == Shape{0, 3} && empty.dtype() == DType::f16,
                "step or empty tensor differ from rank " + std::to_string(prev) + "'s");
    TensorDict b = g.broadcast_tensor_dict(r == 0 ? dict : TensorDict{}, 0);
    check.tensor("broadcast_tensor_dict", b.at("hidden_states").as<Tensor>(), whole_input(0, {4, 8}));
    Value sent = Value(List{Value(r), Value("from")});
    Value back;
    if (r % 2 == 0) {
      g.send_object(sent, (r + 1) % n);
      back = g.recv_object(prev);
    } else {
      back = g.recv_object(prev);
      g.send_object(sent, (r + 1) % n);
    }
    check.value("recv_object", back, List{Value(prev), Value("from")});
  }
}

// The members of `rank`'s group of each kind under the contiguous placement (vLLM's
// arange(world).reshape(-1, dp, pp, tp)), written out here rather than taken from layout.cpp.
Group expected_members(GroupKind kind, int rank, int tp, int pp, int dp) {
  const int t = rank % tp, p = rank / tp % pp, d = rank / (tp * pp) % dp, outer = rank / (tp * pp * dp);
  auto at = [&](int dd, int pp_index, int tt) { return ((outer * dp + dd) * pp + pp_index) * tp + tt; };
  Group members;
  switch (kind) {
    case GroupKind::tp:
      for (int i = 0; i < tp; ++i) members.push_back(at(d, p, i));
      break;
    case GroupKind::pp:
      for (int i = 0; i < pp; ++i) members.push_back(at(d, i, t));
      break;
    case GroupKind::dp:
      for (int i = 0; i < dp; ++i) members.push_back(at(i, p, t));
      break;
    default:  // ep: every rank of this pipeline stage, data-parallel index outer
      for (int i = 0; i < dp; ++i)
        for (int j = 0; j < tp; ++j) members.push_back(at(i, p, j));
  }
  return members;
}

// Collectives inside the tp, pp, dp and ep groups, blocking and asynchronous (several handles in
// flight at once), each against values computed from the members' inputs.
void check_sub_groups(ParallelState& s, Checker& check) {
  const int r = s.rank(), n = s.world_size();
  const int dp = data_parallel_size(n), tp = n % 2 == 0 ? 2 : 1, pp = n / (tp * dp) % 2 == 0 ? 2 : 1;
  s.initialize_model_parallel(tp, pp);
  // Longer than an operation's own timeout, so that a stuck operation reports itself first.
  const auto wait_time = 2 * s.world().timeout();
  for (GroupKind kind : {GroupKind::tp, GroupKind::pp, GroupKind::dp, GroupKind::ep}) {
    GroupCoordinator& g = s.group(kind);
    const std::string name = to_string(kind);
    const Group members = expected_members(kind, r, tp, pp, dp);
    check.truth(name + " members", g.ranks() == members, "the layout's group differs from the contiguous one");
    const int size = static_cast<int>(members.size()), last = members.back();
    check.tensor(name + " all_reduce", g.all_reduce(input(r, {3, 2})), reduced(members, {3, 2}, ReduceOp::sum));
    check.tensor(name + " all_gather", g.all_gather(input(r, {1, 3}), 0), concatenated(members, {1, 3}, 0));
    Tensor filled_in = input(r, {4});
    check.tensor(name + " broadcast", g.broadcast(filled_in, size - 1), whole_input(last, {4}));
    check.tensor(name + " reduce_scatter", g.reduce_scatter(input(r, {size, 2}), 0),
                 row_slice(reduced(members, {size, 2}, ReduceOp::sum), g.rank_in_group(), 1));

    Handle<Tensor> sum = g.async_all_reduce(input(r, {2, 2}), ReduceOp::max);
    Handle<Tensor> gathered = g.async_all_gather(input(r, {2, 1}), 1);
    Handle<void> barrier = g.async_barrier();
    Handle<Tensor> scattered = g.async([t = input(r, {size, 3})](GroupCoordinator& group) {
      return group.reduce_scatter(t, 0);
    });
    check.tensor(name + " async_all_reduce max", sum.wait(wait_time), reduced(members, {2, 2}, ReduceOp::max));
    check.tensor(name + " async_all_gather dim 1", gathered.wait(wait_time), concatenated(members, {2, 1}, 1));
    barrier.wait(wait_time);
    check.tensor(name + " async reduce_scatter", scattered.wait(wait_time),
                 row_slice(reduced(members, {size, 3}, ReduceOp::sum), g.rank_in_group(), 1));
  }
  if (pp > 1) {  // the asynchronous tensor-dict pair along the pipeline
    GroupCoordinator& stages = s.pp();
    if (stages.is_first_rank()) {
      stages.async_send_tensor_dict(TensorDict{{"hidden_states", input(r, {2, 4})}}).wait(wait_time);
    } else {
      TensorDict got = stages.async_recv_tensor_dict().wait(wait_time);
      check.tensor("pp async_recv_tensor_dict", got.at("hidden_states").as<Tensor>(),
                   whole_input(stages.prev_rank(), {2, 4}));
    }
  }
  s.destroy_model_parallel();
}

// send-allgather: pp 2 x tp n/(2 dp).
void check_send_allgather(ParallelState& s, Checker& check) {
  const int n = s.world_size(), tp = n / (2 * data_parallel_size(n));
  s.initialize_model_parallel(tp, 2);
  // "large" is big enough that the runtime slices it where the stages sit on two nodes.
  TensorDict dict{{"hidden_states", input(0, {tp, 6})}, {"large", input(0, {tp, 1 << 18})}, {"step", 3}};
  if (s.pp().is_first_rank()) {
    s.pp().send_tensor_dict(dict, std::nullopt, &s.tp());
  } else {
    TensorDict got = s.pp().recv_tensor_dict(std::nullopt, &s.tp());
    const Tensor& large = got.at("large").as<Tensor>();
    check.tensor("send-allgather", got.at("hidden_states").as<Tensor>(), whole_input(0, {tp, 6}),
                 " " + digest(large));
    check.tensor("send-allgather large", large, whole_input(0, {tp, 1 << 18}));
  }
  s.destroy_model_parallel();
}

// Every check of one rank; false when any result differed from its expected value.
bool check_all(ParallelState& s) {
  Checker check(s.rank());
  check_world(s, check);
  check_sub_groups(s, check);
  if (s.world_size() % 2 == 0) check_send_allgather(s, check);
  return check.ok();
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
  options.data_parallel_size = data_parallel_size(world);
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
          if (!loop) {
            if (!check_all(s)) errors[static_cast<std::size_t>(r)] = "results differ from the expected values";
            return;
          }
          std::printf("rank %d: looping (pid %d)\n", r, static_cast<int>(getpid()));
          std::fflush(stdout);
          const bool objects = loop_op == "broadcast_object";  // a scheduler's step output, from rank 0
          const Value step =
              objects ? List{Value("step"), Value(std::string(static_cast<std::size_t>(payload), 'x'))} : Value();
          const Tensor data = objects ? Tensor() : input(r, {payload});
          auto one_round = [&] {
            if (objects)
              s.world().broadcast_object(r == 0 ? step : Value(None{}), 0);
            else
              s.world().all_reduce(data);
          };
          // Once every rank has said this, each is inside its second round: a test that kills
          // a rank then kills it in the middle of an operation, without guessing with a sleep.
          one_round();
          std::printf("rank %d: first round done\n", r);
          std::fflush(stdout);
          while (true) one_round();
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
