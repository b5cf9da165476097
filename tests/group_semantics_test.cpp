// The promises of group_coordinator.hpp: send-allgather, matching and mismatches, timeouts,
// zero-copy donation, receiving into caller buffers, errors at the sender, asynchronous forms,
// reduce_scatterv's values.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "payload_block.hpp"
#include "rankmesh/error.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;
using namespace std::chrono_literals;

namespace {

Tensor filled(Shape shape, float first) {
  Tensor t = Tensor::empty(shape, DType::f32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = first + static_cast<float>(i);
  return t;
}

bool holds(const Tensor& t, float first) {
  for (std::int64_t i = 0; i < t.numel(); ++i)
    if (t.data_as<float>()[i] != first + static_cast<float>(i)) return false;
  return true;
}

// tp 2 x pp 2: stage 0 (ranks 0, 1) sends to stage 1 (ranks 2, 3) with the TP group as the
// all-gather group; every tensor is replicated across the TP group, as the feature requires.
struct Stages {
  explicit Stages(const char* transport) : transport(transport) {}

  const char* transport;  // RuntimeOptions::transport
  std::vector<TensorDict> received = std::vector<TensorDict>(4);
  std::vector<std::string> errors;

  void run(const AllGatherTensors& sender_map, const AllGatherTensors& receiver_map,
           const TensorDict& dict, std::chrono::milliseconds timeout = default_timeout()) {
    RuntimeOptions options = options_for(4);
    options.transport = transport;
    options.timeout = timeout;
    Runtime runtime(std::move(options));
    errors = run_ranks(runtime, [&](ParallelState& s) {
      s.initialize_model_parallel(2, 2);
      if (s.pp().is_first_rank()) {
        s.pp().send_tensor_dict(dict, std::nullopt, &s.tp(), sender_map);
      } else {
        received[s.rank()] = s.pp().recv_tensor_dict(std::nullopt, &s.tp(), receiver_map);
      }
    });
  }
};

}  // namespace

TEST_CASE_TEMPLATE("send-allgather: forced slices and whole tensors arrive whole, as do runtime choices", Over, RANKMESH_EVERY_TRANSPORT) {
  TensorDict dict{{"hidden_states", filled({4, 6}, 0)},  // 24 elements: may be sliced in 2
                  {"odd", filled({3}, 100)},              // 3 elements: never sliced
                  {"step", 5}};
  // Sender's map x receiver's map: the receiver follows what the metadata says the sender did.
  const AllGatherTensors maps[][2] = {
      {{}, {}},
      {{{"hidden_states", true}}, {{"hidden_states", true}}},
      {{{"hidden_states", true}}, {}},
      {{{"hidden_states", false}}, {}},
      {{{"hidden_states", false}}, {{"hidden_states", false}}},
  };
  for (const auto& [sender, receiver] : maps) {
    Stages stages(Over::transport);
    stages.run(sender, receiver, dict);
    REQUIRE_MESSAGE(all_ok(stages.errors), joined(stages.errors));
    for (int r : {2, 3}) {
      CHECK(stages.received[r].at("hidden_states").as<Tensor>().shape() == Shape{4, 6});
      CHECK(holds(stages.received[r].at("hidden_states").as<Tensor>(), 0));
      CHECK(holds(stages.received[r].at("odd").as<Tensor>(), 100));
      CHECK(stages.received[r].at("step") == Value(5));
    }
  }
}

TEST_CASE_TEMPLATE("send-allgather: ranks of one node send whole where the map leaves the choice", Over, RANKMESH_EVERY_TRANSPORT) {
  // In one process every rank shares the node: slicing would move as many bytes with one step
  // more. A receiver that forbids slicing shows what the sender chose.
  Stages stages(Over::transport);
  TensorDict dict{{"hidden_states", filled({1 << 19}, 0)}};  // 2 MiB, divisible
  stages.run({}, {{"hidden_states", false}}, dict);
  REQUIRE_MESSAGE(all_ok(stages.errors), joined(stages.errors));
  for (int r : {2, 3}) CHECK(holds(stages.received[r].at("hidden_states").as<Tensor>(), 0));
}

TEST_CASE_TEMPLATE("send-allgather: a sender that cannot slice what it must refuses to send", Over, RANKMESH_EVERY_TRANSPORT) {
  TensorDict dict{{"residual", filled({4}, 7)}, {"odd", filled({3}, 1)}};
  Stages forced(Over::transport);  // 3 elements cannot split into 2: the sender refuses, the receivers time out
  forced.run({{"odd", true}}, {{"odd", true}}, dict, scaled_timeout(300ms));
  CHECK(forced.errors[0].find("'odd' has 3 elements") != std::string::npos);
  CHECK(forced.errors[2].find("did not come") != std::string::npos);
}

TEST_CASE_TEMPLATE("send-allgather: a receiver whose map disagrees gets an error, not corrupted data", Over, RANKMESH_EVERY_TRANSPORT) {
  TensorDict dict{{"hidden_states", filled({4}, 0)}};
  struct Case {
    AllGatherTensors sender, receiver;
    const char* says;
  };
  for (const Case& c : {Case{{{"hidden_states", true}}, {{"hidden_states", false}},
                             "travels as a slice, but this receiver's all-gather group and "
                             "all_gather_tensors say it must travel whole"},
                        Case{{{"hidden_states", false}}, {{"hidden_states", true}},
                             "travels whole, but this receiver's all-gather group and "
                             "all_gather_tensors say it must travel as a slice"}}) {
    Stages stages(Over::transport);
    stages.run(c.sender, c.receiver, dict);
    for (int r : {2, 3}) {
      CAPTURE(stages.errors[r]);
      CHECK(stages.errors[r].find("'hidden_states'") != std::string::npos);
      CHECK(stages.errors[r].find(c.says) != std::string::npos);
    }
  }
}

TEST_CASE_TEMPLATE("a collective issued differently on two ranks is a mismatch naming both sides", Over, RANKMESH_EVERY_TRANSPORT) {
  auto errors = run_world<Over>(2, [](ParallelState& s) {
    if (s.rank() == 0) s.world().all_reduce(filled({4}, 0));
    else {
      Tensor mine = filled({4}, 0);
      s.world().broadcast(mine, 1);
    }
  });
  CAPTURE(joined(errors));
  bool named = false;
  for (auto& e : errors)
    named |= e.find("asked for") != std::string::npos && e.find("all_reduce float32 [4] sum") != std::string::npos &&
             e.find("broadcast float32 [4] root group rank 1") != std::string::npos &&
             e.find("world:0") != std::string::npos;
  CHECK(named);
}

TEST_CASE_TEMPLATE("a receive with no matching send times out naming the group, source and what", Over, RANKMESH_EVERY_TRANSPORT) {
  RuntimeOptions options = options_for<Over>(2);
  auto errors = run_world([](ParallelState& s) {
    if (s.rank() != 1) return;
    s.world().set_timeout(100ms);
    s.world().recv_tensor_dict(0);
  }, options);
  CHECK(errors[0].empty());
  CAPTURE(errors[1]);
  CHECK(errors[1].find("world:0") != std::string::npos);
  CHECK(errors[1].find("send_tensor_dict #0 from group rank 0 (rank 0)") != std::string::npos);
}

TEST_CASE_TEMPLATE("a message arriving after its receive timed out is discarded", Over, RANKMESH_EVERY_TRANSPORT) {
  std::atomic<int> phase{0};
  Value second;
  auto errors = run_world<Over>(2, [&](ParallelState& s) {
    GroupCoordinator& g = s.world();
    if (s.rank() == 0) {
      g.set_timeout(50ms);
      CHECK_THROWS_AS(g.recv_object(1), Error);
      phase = 1;
      g.set_timeout(default_timeout());
      second = g.recv_object(1);
    } else {
      while (phase.load() == 0) std::this_thread::yield();
      g.send_object(Value("late"), 0);
      g.send_object(Value("fresh"), 0);
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK(second == Value("fresh"));
}

TEST_CASE("a donated 64 MiB tensor changes hands without a copy or an allocation of its size") {
  constexpr std::int64_t kFloats = 16 << 20;  // 64 MiB
  std::atomic<std::size_t> largest{0};
  RuntimeOptions options = options_for(2);
  options.allocator = [&](const Shape& shape, DType dtype) {
    std::size_t bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
    std::size_t seen = largest.load();
    while (bytes > seen && !largest.compare_exchange_weak(seen, bytes)) {}
    return Tensor::empty(shape, dtype);
  };
  const void* sent = nullptr;
  Tensor got, copied;
  auto errors = run_world([&](ParallelState& s) {
    if (s.rank() == 0) {
      Tensor big = filled({kFloats}, 0);
      sent = big.data();
      s.world().send_tensor_dict(TensorDict{{"big", std::move(big)}}, 1);  // donated
      s.world().send_tensor_dict(TensorDict{{"small", filled({4}, 3)}}, 1);  // kept: copied
    } else {
      got = s.world().recv_tensor_dict(0).at("big").as<Tensor>();
      copied = s.world().recv_tensor_dict(0).at("small").as<Tensor>();
    }
  }, options);
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK(got.data() == sent);
  CHECK(largest.load() < static_cast<std::size_t>(kFloats) * 4);
  CHECK(holds(copied, 3));
}

TEST_CASE_TEMPLATE("a tensor not donated reaches the receiver as a copy", Over, RANKMESH_EVERY_TRANSPORT) {
  Tensor mine = filled({8}, 1);
  Tensor theirs;
  auto errors = run_world<Over>(2, [&](ParallelState& s) {
    if (s.rank() == 0) {
      TensorDict dict{{"x", mine}};
      s.world().send_tensor_dict(dict, 1);
    } else {
      theirs = s.world().recv_tensor_dict(0).at("x").as<Tensor>();
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK_FALSE(theirs.shares_storage_with(mine));
  CHECK(holds(theirs, 1));
}

TEST_CASE_TEMPLATE("small tensors not donated reach the receiver as copies, in one shared block "
                   "where they are copied for the peer; large ones each in their own", Over,
                   RANKMESH_EVERY_TRANSPORT) {
  // Over inproc the sender copies what it does not donate (the receiver reads after send()
  // returns): the small ones into parts of one pooled block. Over shm and tcp the channel
  // copies, and the receiver lands the small ones in parts of one block.
  constexpr std::int64_t kLarge = static_cast<std::int64_t>(PayloadBlock::kSharedBytes / 4) + 1;
  TensorDict mine{{"a", filled({3}, 1)},    {"n", 5},           {"b", filled({2, 5}, 20)},
                  {"empty", filled({0}, 0)}, {"big", filled({kLarge}, 300)},
                  {"c", TensorDict{{"d", filled({17}, 40)}}}};
  TensorDict theirs;
  auto errors = run_world<Over>(2, [&](ParallelState& s) {
    if (s.rank() == 0) {
      s.world().send_tensor_dict(mine, 1);
      // The caller's tensors are its own again once send() returns.
      for (const char* key : {"a", "b", "big"}) {
        const Tensor& t = mine.at(key).as<Tensor>();
        for (std::int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = -1;
      }
      s.world().send_object(Value(1), 1);
    } else {
      theirs = s.world().recv_tensor_dict(0);
      CHECK(s.world().recv_object(0) == Value(1));
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  const Tensor& a = theirs.at("a").as<Tensor>();
  const Tensor& b = theirs.at("b").as<Tensor>();
  const Tensor& big = theirs.at("big").as<Tensor>();
  const Tensor& d = theirs.at("c").as<TensorDict>().at("d").as<Tensor>();
  CHECK(holds(a, 1));
  CHECK(holds(b, 20));
  CHECK(b.shape() == Shape{2, 5});
  CHECK(holds(big, 300));
  CHECK(holds(d, 40));
  CHECK(theirs.at("n") == Value(5));
  CHECK(theirs.at("empty").as<Tensor>().numel() == 0);
  for (const Tensor* t : {&a, &b, &big, &d}) {
    CHECK(reinterpret_cast<std::uintptr_t>(t->data()) % 64 == 0);
    for (const char* key : {"a", "b", "big"}) CHECK_FALSE(t->shares_storage_with(mine.at(key).as<Tensor>()));
  }
  CHECK_FALSE(big.shares_storage_with(a));
  // Inproc: the sender's copies share a block; shm and tcp: the receiver's landing tensors do.
  CHECK(a.shares_storage_with(b));
  CHECK(a.shares_storage_with(d));
}

TEST_CASE_TEMPLATE("recv_tensor_dict lands tensors in the caller's buffers, checked against the metadata", Over, RANKMESH_EVERY_TRANSPORT) {
  Tensor buffer = Tensor::empty({2, 2}, DType::f32);
  TensorDict got;
  std::string wrong;
  auto errors = run_world<Over>(2, [&](ParallelState& s) {
    if (s.rank() == 0) {
      s.world().send_tensor_dict(TensorDict{{"x", filled({2, 2}, 9)}}, 1);
      s.world().send_tensor_dict(TensorDict{{"x", filled({4}, 9)}}, 1);
    } else {
      got = s.world().recv_tensor_dict(0, nullptr, {}, {{"x", buffer}});
      try {
        s.world().recv_tensor_dict(0, nullptr, {}, {{"x", buffer}});
      } catch (const Error& e) {
        wrong = e.what();
      }
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK(got.at("x").as<Tensor>().data() == buffer.data());
  CHECK(holds(buffer, 9));
  CHECK(wrong.find("the buffer given for 'x' is [2, 2] float32, but group rank 0 (rank 0) sent [4] float32") !=
        std::string::npos);
}

TEST_CASE_TEMPLATE("a dict the codec cannot carry fails at the sender, and the world goes on", Over, RANKMESH_EVERY_TRANSPORT) {
  auto errors = run_world<Over>(2, [&](ParallelState& s) {
    if (s.rank() == 0) {
      // In one process too (where dicts are handed over, not encoded) the codec's rules hold.
      TensorDict bad{{"list", List{Value(filled({1}, 0))}}};
      CHECK_THROWS_WITH_AS(s.world().send_tensor_dict(bad, 1),
                           doctest::Contains("'list' holds a list with a tensor or dict inside"), Error);
      TensorDict undefined{{"outer", TensorDict{{"inner", Tensor()}}}};
      CHECK_THROWS_WITH_AS(s.world().send_tensor_dict(undefined, 1),
                           doctest::Contains("'outer.inner' holds an undefined tensor"), Error);
      s.world().send_object(Value(1), 1);
    } else {
      CHECK(s.world().recv_object(0) == Value(1));
    }
  });
  CHECK_MESSAGE(all_ok(errors), joined(errors));
}

TEST_CASE_TEMPLATE("group calls before initialize_model_parallel are errors, the world group exists", Over, RANKMESH_EVERY_TRANSPORT) {
  Runtime runtime(options_for<Over>(2));
  auto errors = run_ranks(runtime, [&](ParallelState& s) {
    CHECK(s.is_global_first_rank());  // nothing initialized yet
    CHECK_FALSE(s.model_parallel_is_initialized());
    CHECK_THROWS_WITH_AS(s.tp(), doctest::Contains("does not exist before"), Error);
    s.world().barrier();
  });
  CHECK_MESSAGE(all_ok(errors), joined(errors));
}

TEST_CASE_TEMPLATE("asynchronous operations: several in flight, polled and waited, in issue order", Over, RANKMESH_EVERY_TRANSPORT) {
  std::vector<float> sums(4);
  std::vector<TensorDict> dicts(4);
  auto errors = run_world<Over>(4, [&](ParallelState& s) {
    GroupCoordinator& g = s.world();
    Handle<Tensor> reduced = g.async_all_reduce(filled({3}, static_cast<float>(s.rank())));
    Handle<void> barrier = g.async_barrier();
    Handle<void> sent = g.async_send_tensor_dict(TensorDict{{"r", s.rank()}});
    Handle<TensorDict> got = g.async_recv_tensor_dict();
    dicts[s.rank()] = got.wait(default_timeout());
    CHECK(barrier.poll());  // issued before the receive, so finished by now
    sent.wait(default_timeout());
    barrier.wait(default_timeout());
    sums[s.rank()] = reduced.wait(default_timeout()).data_as<float>()[2];
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (int r = 0; r < 4; ++r) {
    CHECK(sums[r] == 0 + 1 + 2 + 3 + 4 * 2.0f);
    CHECK(dicts[r].at("r") == Value((r + 3) % 4));
  }
}

TEST_CASE_TEMPLATE("abort fails every pending operation at once", Over, RANKMESH_EVERY_TRANSPORT) {
  Runtime runtime(options_for<Over>(2));
  std::atomic<bool> waiting{false};
  std::string error;
  std::thread receiver([&] {
    try {
      waiting = true;
      runtime.rank(1).world().recv_object(0);
    } catch (const Error& e) {
      error = e.what();
    }
  });
  while (!waiting) std::this_thread::yield();
  std::this_thread::sleep_for(20ms);  // let it block; abort must end the wait either way
  runtime.abort("operator stopped the world");
  receiver.join();
  CHECK_MESSAGE(error.find("operator stopped the world") != std::string::npos, error);
}

TEST_CASE_TEMPLATE("any operation has an asynchronous form through async()", Over, RANKMESH_EVERY_TRANSPORT) {
  std::vector<Tensor> gathered(3);
  std::vector<Value> objects(3);
  auto errors = run_world<Over>(3, [&](ParallelState& s) {
    GroupCoordinator& g = s.world();
    Tensor mine = filled({2}, static_cast<float>(10 * s.rank()));
    auto gather = g.async([mine](GroupCoordinator& c) { return c.gather(mine, 0, 0); });
    auto object = g.async([r = s.rank()](GroupCoordinator& c) {
      return c.broadcast_object(r == 2 ? Value("two") : Value(None{}), 2);
    });
    objects[s.rank()] = object.wait(default_timeout());
    gathered[s.rank()] = gather.wait(default_timeout());
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK(gathered[0].shape() == Shape{6});
  CHECK(gathered[0].data_as<float>()[4] == 20.0f);
  CHECK_FALSE(gathered[1].defined());
  for (auto& o : objects) CHECK(o == Value("two"));
}

TEST_CASE_TEMPLATE("an asynchronous operation's error comes back through its handle", Over, RANKMESH_EVERY_TRANSPORT) {
  auto errors = run_world<Over>(2, [&](ParallelState& s) {
    if (s.rank() != 0) return;
    s.world().set_timeout(50ms);
    auto handle = s.world().async_recv_tensor_dict(1);
    CHECK_THROWS_WITH_AS(handle.wait(default_timeout()), doctest::Contains("did not come"), Error);
  });
  CHECK_MESSAGE(all_ok(errors), joined(errors));
}

TEST_CASE_TEMPLATE("a point-to-point call to the rank itself is refused (a group of one has no peer)", Over, RANKMESH_EVERY_TRANSPORT) {
  auto errors = run_world<Over>(1, [&](ParallelState& s) {
    CHECK_THROWS_WITH_AS(s.world().send_tensor_dict(TensorDict{{"x", 1}}),
                         doctest::Contains("dst is this rank itself"), Error);
    CHECK_THROWS_WITH_AS(s.world().recv_object(0), doctest::Contains("src is this rank itself"), Error);
  });
  CHECK_MESSAGE(all_ok(errors), joined(errors));
}

#ifndef NDEBUG
TEST_CASE_TEMPLATE("debug builds detect two threads inside one coordinator", Over, RANKMESH_EVERY_TRANSPORT) {
  Runtime runtime(options_for<Over>(2));
  GroupCoordinator& g = runtime.rank(0).world();
  g.set_timeout(scaled_timeout(2000ms));
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    // Nobody sends: once inside, it stays there until its timeout. Entering may collide with
    // the main thread's calls below (then it is told so, and tries again).
    bool entered = false;
    while (!entered) {
      try {
        g.recv_object(1);
      } catch (const Error& e) {
        entered = std::string(e.what()).find("another thread is inside") == std::string::npos;
      }
    }
    done = true;
  });
  // A call with a bad peer has no effect; it reports the other thread once that one is inside.
  std::string seen;
  while (!done && seen.find("another thread is inside") == std::string::npos) {
    try {
      g.send_object(Value(1), 99);
    } catch (const Error& e) {
      seen = e.what();
    }
  }
  CHECK(seen.find("another thread is inside") != std::string::npos);
  runtime.abort("test over");
  waiter.join();
}
#endif

TEST_CASE_TEMPLATE("after an abort the coordinator says why, and later operations fail at once", Over, RANKMESH_EVERY_TRANSPORT) {
  std::mutex mutex;
  std::vector<std::string> logged;
  RuntimeOptions options = options_for<Over>(2);
  options.log = [&](const std::string& line) {
    std::lock_guard lock(mutex);
    logged.push_back(line);
  };
  Runtime runtime(std::move(options));
  GroupCoordinator& g = runtime.rank(0).world();
  CHECK(g.failure().empty());
  auto errors = run_ranks(runtime, [](ParallelState& s) {
    s.world().barrier();  // leaves a trace in the history
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  runtime.rank(0).abort("engine shut down");
  CHECK(g.failure() == "engine shut down");
  CHECK_THROWS_WITH_AS(g.recv_object(1), doctest::Contains("engine shut down"), Error);
  // The failure was logged with the operations that led to it.
  std::lock_guard lock(mutex);
  REQUIRE_FALSE(logged.empty());
  CHECK(logged.back().find("last operations of rank 0") != std::string::npos);
  CHECK(logged.back().find("barrier #0 on world:0") != std::string::npos);
}

namespace {

// Element `index` of rank `src`'s input: small integers (exact in f32 sums) whose largest and
// smallest come from different ranks at different elements, so that a wrong source, row or
// operation shows.
float scattered_input(int src, std::int64_t index) {
  return static_cast<float>((src * 31 + index * 17) % 23 - 11);
}

float combined(ReduceOp op, int world, std::int64_t index) {
  float acc = scattered_input(0, index);
  for (int src = 1; src < world; ++src) {
    const float x = scattered_input(src, index);
    acc = op == ReduceOp::sum ? acc + x : op == ReduceOp::max ? std::max(acc, x) : std::min(acc, x);
  }
  return acc;
}

}  // namespace

TEST_CASE_TEMPLATE("reduce_scatterv gives each rank its own rows, reduced, along dim 0 and dim 1", Over, RANKMESH_EVERY_TRANSPORT) {
  for (int world : {1, 2, 3, 4}) {
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::min}) {
      CAPTURE(world);
      CAPTURE(to_string(op));
      // Uneven sizes, some ranks getting none: 1, 0, 2, 1.
      std::vector<std::int64_t> sizes(static_cast<std::size_t>(world)), offsets(sizes.size());
      std::int64_t rows = 0;
      for (int j = 0; j < world; ++j) {
        offsets[static_cast<std::size_t>(j)] = rows;
        rows += sizes[static_cast<std::size_t>(j)] = (2 * j + 1) % 3;
      }
      std::vector<Tensor> along0(static_cast<std::size_t>(world)), along1(along0.size());
      auto errors = run_world<Over>(world, [&](ParallelState& s) {
        const int r = s.rank();
        Tensor input0 = Tensor::empty({rows, 3}, DType::f32), input1 = Tensor::empty({2, rows}, DType::f32);
        for (std::int64_t i = 0; i < 3 * rows; ++i) input0.data_as<float>()[i] = scattered_input(r, i);
        for (std::int64_t i = 0; i < 2 * rows; ++i) input1.data_as<float>()[i] = scattered_input(r, i);
        along0[static_cast<std::size_t>(r)] = s.world().reduce_scatterv(input0, sizes, 0, op);
        along1[static_cast<std::size_t>(r)] = s.world().reduce_scatterv(input1, sizes, 1, op);
      });
      REQUIRE_MESSAGE(all_ok(errors), joined(errors));
      for (int r = 0; r < world; ++r) {
        CAPTURE(r);
        const std::int64_t mine = sizes[static_cast<std::size_t>(r)], first = offsets[static_cast<std::size_t>(r)];
        const Tensor& got0 = along0[static_cast<std::size_t>(r)];
        const Tensor& got1 = along1[static_cast<std::size_t>(r)];
        REQUIRE(got0.shape() == Shape{mine, 3});
        REQUIRE(got1.shape() == Shape{2, mine});
        for (std::int64_t row = 0; row < mine; ++row)
          for (std::int64_t col = 0; col < 3; ++col)
            CHECK(got0.data_as<float>()[row * 3 + col] == combined(op, world, (first + row) * 3 + col));
        for (std::int64_t row = 0; row < 2; ++row)
          for (std::int64_t col = 0; col < mine; ++col)
            CHECK(got1.data_as<float>()[row * mine + col] == combined(op, world, row * rows + first + col));
      }
    }
  }
}

TEST_CASE_TEMPLATE("a rebuilt group never receives a frame meant for the group it replaced", Over, RANKMESH_EVERY_TRANSPORT) {
  // Groups rebuilt by initialize_model_parallel keep their kind and index; their counters start
  // at 0 again. A frame sent on the old tp group and stashed unread (it overtook a world
  // message) must not be taken by the new tp group's receive #0.
  auto errors = run_world<Over>(2, [&](ParallelState& s) {
    s.initialize_model_parallel(2);
    if (s.rank() == 0) {
      s.tp().send_object(Value("for the old tp group"), 1);
      s.world().send_object(Value("marker"), 1);
    } else {
      CHECK(s.world().recv_object(0) == Value("marker"));  // stashes the tp frame on its way
    }
    s.destroy_model_parallel();
    s.initialize_model_parallel(2);
    if (s.rank() == 0) {
      s.tp().send_object(Value("for the new tp group"), 1);
    } else {
      CHECK(s.tp().recv_object(0) == Value("for the new tp group"));
    }
  });
  CHECK_MESSAGE(all_ok(errors), joined(errors));
}
