// GroupCoordinator operations on in-process worlds of 1, 2, 3, 4 and 8 ranks. Each rank's
// results are collected on its own thread and compared here with a one-rank reference.
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <numeric>
#include <thread>

#include "rankmesh/error.hpp"
#include "half.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace {

// Rank r's input: element i is r * 1000 + i (exact in every dtype used here).
Tensor input_of(int rank, Shape shape, DType dtype = DType::f32) {
  Tensor t = Tensor::empty(shape, dtype);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    double v = rank * 1000.0 + static_cast<double>(i);
    switch (dtype) {
      case DType::f32: t.data_as<float>()[i] = static_cast<float>(v); break;
      case DType::i32: t.data_as<std::int32_t>()[i] = static_cast<std::int32_t>(v); break;
      case DType::i64: t.data_as<std::int64_t>()[i] = static_cast<std::int64_t>(v); break;
      default: FAIL("input_of: unsupported dtype");
    }
  }
  return t;
}

std::vector<float> floats(const Tensor& t) {
  REQUIRE(t.dtype() == DType::f32);
  return std::vector<float>(t.data_as<float>(), t.data_as<float>() + t.numel());
}

std::vector<float> iota_from(float start, std::int64_t count) {
  std::vector<float> v(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) v[static_cast<std::size_t>(i)] = start + static_cast<float>(i);
  return v;
}

const int kSizes[] = {1, 2, 3, 4, 8};

}  // namespace

TEST_CASE_TEMPLATE("properties of every group kind follow the layout, with next/prev wrapping", Over, RANKMESH_EVERY_TRANSPORT) {
  Runtime runtime(options_for<Over>(8, 2));
  std::mutex mutex;
  std::vector<std::string> seen;
  auto errors = run_ranks(runtime, [&](ParallelState& s) {
    s.initialize_model_parallel(2, 2);
    const Layout& layout = s.layout();
    for (GroupKind kind : kAllGroupKinds) {
      GroupCoordinator& g = s.group(kind);
      Coordinate at = layout.coordinate(kind, s.rank());
      const Group& expected = layout.groups(kind)[static_cast<std::size_t>(at.group)];
      if (g.ranks() != expected) throw std::runtime_error("ranks differ");
      if (g.rank_in_group() != at.rank_in_group) throw std::runtime_error("rank_in_group");
      if (g.world_size() != static_cast<int>(expected.size())) throw std::runtime_error("size");
      if (g.first_rank() != expected.front() || g.last_rank() != expected.back())
        throw std::runtime_error("first/last");
      std::size_t i = static_cast<std::size_t>(at.rank_in_group), n = expected.size();
      if (g.next_rank() != expected[(i + 1) % n] || g.prev_rank() != expected[(i + n - 1) % n])
        throw std::runtime_error("next/prev");
      if (g.is_first_rank() != (i == 0) || g.is_last_rank() != (i + 1 == n))
        throw std::runtime_error("is_first/is_last");
      if (g.unique_name() != std::string(to_string(kind)) + ":" + std::to_string(at.group))
        throw std::runtime_error("unique_name " + g.unique_name());
      if (g.rank() != s.rank() || g.local_rank() != s.rank()) throw std::runtime_error("rank");
    }
    std::lock_guard lock(mutex);
    seen.push_back(s.pp().unique_name());
  });
  CHECK_MESSAGE(all_ok(errors), joined(errors));
  CHECK(seen.size() == 8);
}

TEST_CASE_TEMPLATE("all_reduce sum, max and min equal the one-rank reference on 1, 2, 3, 4 and 8 ranks", Over, RANKMESH_EVERY_TRANSPORT) {
  for (int world : kSizes) {
    CAPTURE(world);
    std::vector<Tensor> sums(world), maxes(world), mins(world), ints(world);
    auto errors = run_world<Over>(world, [&](ParallelState& s) {
      GroupCoordinator& g = s.world();
      Tensor in = input_of(s.rank(), {3, 5});  // 15 elements: chunks are uneven for 2, 4, 8
      sums[s.rank()] = g.all_reduce(in);
      maxes[s.rank()] = g.all_reduce(in, ReduceOp::max);
      mins[s.rank()] = g.all_reduce(in, ReduceOp::min);
      ints[s.rank()] = g.all_reduce(input_of(s.rank(), {7}, DType::i64));
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    std::vector<float> sum(15, 0.0f);
    for (int r = 0; r < world; ++r)
      for (int i = 0; i < 15; ++i) sum[i] += static_cast<float>(r * 1000 + i);
    for (int r = 0; r < world; ++r) {
      CHECK(sums[r].shape() == Shape{3, 5});
      CHECK(floats(sums[r]) == sum);
      CHECK(floats(maxes[r]) == iota_from(static_cast<float>((world - 1) * 1000), 15));
      CHECK(floats(mins[r]) == iota_from(0.0f, 15));
      for (int i = 0; i < 7; ++i)
        CHECK(ints[r].data_as<std::int64_t>()[i] == 1000 * world * (world - 1) / 2 + world * i);
    }
  }
}

TEST_CASE_TEMPLATE("all_reduce of tensors reduced piece by piece equals the one-rank reference on 2, 3 and 4 ranks", Over, RANKMESH_EVERY_TRANSPORT) {
  // Odd sizes: 3 elements on 4 ranks leave one owner nothing; 3,000,017 floats (12 MiB) make
  // every owner's chunk several pieces, of uneven lengths. The values are not exact in f32, so
  // only additions in ascending rank order give the reference bit for bit.
  auto value = [](int rank, std::int64_t i) {
    return static_cast<float>(i % 97) * 0.1f + static_cast<float>(rank) * 0.37f;
  };
  for (std::int64_t numel : {std::int64_t{3}, std::int64_t{3'000'017}}) {
    for (int world : {2, 3, 4}) {
      CAPTURE(numel);
      CAPTURE(world);
      std::vector<Tensor> sums(world), maxes(world);
      auto errors = run_world<Over>(world, [&](ParallelState& s) {
        Tensor in = Tensor::empty({numel}, DType::f32);
        for (std::int64_t i = 0; i < numel; ++i) in.data_as<float>()[i] = value(s.rank(), i);
        sums[s.rank()] = s.world().all_reduce(in);
        maxes[s.rank()] = s.world().all_reduce(in, ReduceOp::max);
        // The input is the caller's again: a peer still reading it would see this.
        std::memset(in.data(), 0xff, in.nbytes());
      });
      REQUIRE_MESSAGE(all_ok(errors), joined(errors));
      std::int64_t wrong = 0;
      for (int r = 0; r < world; ++r)
        for (std::int64_t i = 0; i < numel; ++i) {
          float sum = value(0, i);
          for (int member = 1; member < world; ++member) sum += value(member, i);
          wrong += sums[r].data_as<float>()[i] != sum;
          wrong += maxes[r].data_as<float>()[i] != value(world - 1, i);
        }
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE_TEMPLATE("reduce_scatter equals the one-rank reference where parts are blocks of the input and where they are not", Over, RANKMESH_EVERY_TRANSPORT) {
  // {rows, 5} along dim 0 and {1, rows, 5} along dim 1: each part is one block of the input
  // (read in place); {2, rows} along dim 1: parts are strided (copied).
  auto value = [](int rank, std::int64_t i) {
    return static_cast<float>(i % 89) * 0.3f + static_cast<float>(rank) * 0.71f;
  };
  for (int world : {2, 3, 4}) {
    CAPTURE(world);
    const std::int64_t rows = 6 * world;
    const Shape shapes[] = {Shape{rows, 5}, Shape{1, rows, 5}, Shape{2, rows}};
    const int dims[] = {0, 1, 1};
    std::vector<std::vector<Tensor>> got(3, std::vector<Tensor>(world));
    auto errors = run_world<Over>(world, [&](ParallelState& s) {
      for (int c = 0; c < 3; ++c) {
        Tensor in = Tensor::empty(shapes[c], DType::f32);
        for (std::int64_t i = 0; i < in.numel(); ++i) in.data_as<float>()[i] = value(s.rank(), i);
        got[c][s.rank()] = s.world().reduce_scatter(in, dims[c]);
        std::memset(in.data(), 0xff, in.nbytes());  // the caller's again
      }
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    for (int c = 0; c < 3; ++c) {
      CAPTURE(c);
      const Shape& shape = shapes[c];
      const std::int64_t inner = c == 2 ? 1 : 5, part_rows = rows / world;
      const std::int64_t outer = c == 2 ? 2 : 1;
      for (int r = 0; r < world; ++r) {
        const Tensor& t = got[c][r];
        REQUIRE(t.numel() == shape.numel() / world);
        std::int64_t wrong = 0, k = 0;
        for (std::int64_t o = 0; o < outer; ++o)
          for (std::int64_t row = r * part_rows; row < (r + 1) * part_rows; ++row)
            for (std::int64_t e = 0; e < inner; ++e, ++k) {
              const std::int64_t i = (o * rows + row) * inner + e;
              float sum = value(0, i);
              for (int member = 1; member < world; ++member) sum += value(member, i);
              wrong += t.data_as<float>()[k] != sum;
            }
        CHECK(wrong == 0);
      }
    }
  }
}

TEST_CASE_TEMPLATE("all_reduce adds f16 in f32, in ascending rank order", Over, RANKMESH_EVERY_TRANSPORT) {
  // 2048 + 1 + 1 in f16 step by step rounds to 2048 twice; accumulated in f32 it is 2050.
  std::vector<Tensor> out(3);
  auto errors = run_world<Over>(3, [&](ParallelState& s) {
    Tensor t = Tensor::empty({1}, DType::f16);
    t.data_as<std::uint16_t>()[0] = f32_to_f16(s.rank() == 0 ? 2048.0f : 1.0f);
    out[s.rank()] = s.world().all_reduce(t);
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (auto& t : out) CHECK(f16_to_f32(t.data_as<std::uint16_t>()[0]) == 2050.0f);
}

TEST_CASE_TEMPLATE("reductions of bool and fp8 are refused before any communication", Over, RANKMESH_EVERY_TRANSPORT) {
  auto errors = run_world<Over>(2, [&](ParallelState& s) {
    s.world().all_reduce(Tensor::empty({4}, DType::boolean));
  });
  for (auto& e : errors) CHECK(e.find("bool") != std::string::npos);
  errors = run_world<Over>(2, [&](ParallelState& s) {
    s.world().reduce_scatter(Tensor::empty({4}, DType::fp8_e4m3));
  });
  for (auto& e : errors) CHECK(e.find("float8") != std::string::npos);
}

TEST_CASE_TEMPLATE("all_gather and all_gatherv concatenate in group-rank order along any dim", Over, RANKMESH_EVERY_TRANSPORT) {
  for (int world : kSizes) {
    CAPTURE(world);
    std::vector<Tensor> dim0(world), dim1(world), uneven(world);
    auto errors = run_world<Over>(world, [&](ParallelState& s) {
      GroupCoordinator& g = s.world();
      int r = s.rank();
      dim0[r] = g.all_gather(input_of(r, {2, 3}), 0);
      dim1[r] = g.all_gather(input_of(r, {2, 3}), 1);
      uneven[r] = g.all_gatherv(input_of(r, {r + 1, 2}), 0);  // rank r brings r+1 rows
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    for (int r = 0; r < world; ++r) {
      CHECK(dim0[r].shape() == Shape{2 * world, 3});
      CHECK(dim1[r].shape() == Shape{2, 3 * world});
      for (int src = 0; src < world; ++src)
        for (int row = 0; row < 2; ++row)
          for (int col = 0; col < 3; ++col) {
            float want = static_cast<float>(src * 1000 + row * 3 + col);
            CHECK(dim0[r].data_as<float>()[(src * 2 + row) * 3 + col] == want);
            CHECK(dim1[r].data_as<float>()[row * 3 * world + src * 3 + col] == want);
          }
      CHECK(uneven[r].shape() == Shape{world * (world + 1) / 2, 2});
      std::vector<float> want;
      for (int src = 0; src < world; ++src)
        for (float v : iota_from(static_cast<float>(src * 1000), (src + 1) * 2)) want.push_back(v);
      CHECK(floats(uneven[r]) == want);
    }
  }
}

TEST_CASE_TEMPLATE("reduce_scatter and reduce_scatterv give each rank its reduced rows", Over, RANKMESH_EVERY_TRANSPORT) {
  for (int world : kSizes) {
    CAPTURE(world);
    std::vector<Tensor> even(world), uneven(world);
    auto errors = run_world<Over>(world, [&](ParallelState& s) {
      int r = s.rank();
      even[r] = s.world().reduce_scatter(input_of(r, {2 * world, 2}), 0);
      std::vector<std::int64_t> sizes(world);
      for (int j = 0; j < world; ++j) sizes[j] = j % 3;  // some ranks get no rows
      std::int64_t rows = std::accumulate(sizes.begin(), sizes.end(), std::int64_t{0});
      uneven[r] = s.world().reduce_scatterv(input_of(r, {2, rows}), sizes, 1, ReduceOp::max);
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    for (int r = 0; r < world; ++r) {
      CHECK(even[r].shape() == Shape{2, 2});
      for (int i = 0; i < 4; ++i) {
        float want = 0;
        for (int src = 0; src < world; ++src) want += static_cast<float>(src * 1000 + r * 4 + i);
        CHECK(even[r].data_as<float>()[i] == want);
      }
      CHECK(uneven[r].shape() == Shape{2, r % 3});
    }
  }
}

TEST_CASE_TEMPLATE("gather, broadcast, barrier and all_to_all", Over, RANKMESH_EVERY_TRANSPORT) {
  for (int world : kSizes) {
    CAPTURE(world);
    std::vector<Tensor> gathered(world), broadcasted(world), exchanged(world);
    auto errors = run_world<Over>(world, [&](ParallelState& s) {
      GroupCoordinator& g = s.world();
      int r = s.rank();
      int root = world - 1;
      gathered[r] = g.gather(input_of(r, {1, 2}), root, 0);
      Tensor mine = input_of(r, {4});
      broadcasted[r] = g.broadcast(mine, root);
      g.barrier();
      // Rank r sends j+1 rows to rank j; each row holds (sender, receiver).
      std::vector<std::int64_t> counts(world);
      std::int64_t rows = 0;
      for (int j = 0; j < world; ++j) rows += counts[j] = j + 1;
      Tensor in = Tensor::empty({rows, 2}, DType::i32);
      std::int64_t row = 0;
      for (int j = 0; j < world; ++j)
        for (int k = 0; k <= j; ++k, ++row) {
          in.data_as<std::int32_t>()[row * 2] = r;
          in.data_as<std::int32_t>()[row * 2 + 1] = j;
        }
      exchanged[r] = g.all_to_all(in, counts);
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    for (int r = 0; r < world; ++r) {
      if (r == world - 1) {
        CHECK(gathered[r].shape() == Shape{world, 2});
        for (int src = 0; src < world; ++src)
          CHECK(gathered[r].data_as<float>()[src * 2 + 1] == static_cast<float>(src * 1000 + 1));
      } else {
        CHECK_FALSE(gathered[r].defined());
      }
      CHECK(floats(broadcasted[r]) == iota_from(static_cast<float>((world - 1) * 1000), 4));
      CHECK(exchanged[r].shape() == Shape{world * (r + 1), 2});
      for (std::int64_t row = 0; row < exchanged[r].shape()[0]; ++row) {
        CHECK(exchanged[r].data_as<std::int32_t>()[row * 2] == row / (r + 1));
        CHECK(exchanged[r].data_as<std::int32_t>()[row * 2 + 1] == r);
      }
    }
  }
}

TEST_CASE_TEMPLATE("broadcast into a tensor and all_gather of 16 MiB on 4 ranks are exact, receives spanning wait slices", Over, RANKMESH_EVERY_TRANSPORT) {
  // Payloads land in the receivers' memory (a broadcast's tensor to fill, all_gather's result)
  // while a receive waits in slices (watchdog.hpp): a frame still arriving when a slice ends
  // must go on landing in the same memory, whole (over tcp this once returned wrong bytes).
  constexpr std::int64_t kCount = 4 << 20;  // float32: 16 MiB
  constexpr int kWorld = 4;
  std::vector<std::string> wrong(kWorld);
  auto errors = run_world<Over>(kWorld, [&](ParallelState& s) {
    GroupCoordinator& g = s.world();
    const int r = s.rank();
    Tensor mine = input_of(r, {kCount});
    Tensor filled = Tensor::empty({kCount}, DType::f32);
    for (int round = 0; round < 3; ++round) {
      const int root = round % kWorld;
      Tensor& target = r == root ? mine : filled;
      g.broadcast(target, root);
      for (std::int64_t i = 0; i < kCount; i += 4099)
        if (target.data_as<float>()[i] != static_cast<float>(root * 1000.0 + static_cast<double>(i)))
          wrong[r] = "broadcast from " + std::to_string(root) + ": element " + std::to_string(i);
      Tensor all = g.all_gather(mine, 0);
      for (int src = 0; src < kWorld; ++src)
        for (std::int64_t i = 0; i < kCount; i += 4099)
          if (all.data_as<float>()[src * kCount + i] != static_cast<float>(src * 1000.0 + static_cast<double>(i)))
            wrong[r] = "all_gather: rank " + std::to_string(src) + "'s element " + std::to_string(i);
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (int r = 0; r < kWorld; ++r) CHECK_MESSAGE(wrong[r].empty(), "rank ", r, ": ", wrong[r]);
}

TEST_CASE_TEMPLATE("objects: send/recv around a ring and broadcast_object", Over, RANKMESH_EVERY_TRANSPORT) {
  for (int world : kSizes) {
    CAPTURE(world);
    std::vector<Value> got(world), broadcasted(world);
    auto errors = run_world<Over>(world, [&](ParallelState& s) {
      GroupCoordinator& g = s.world();
      int r = s.rank();
      if (world > 1) {
        List payload{Value(r), Value("from"), Value(Bytes{1, 2}), Value(None{}), Value(0.5)};
        if (r % 2 == 0) {
          g.send_object(payload, (r + 1) % world);
          got[r] = g.recv_object((r + world - 1) % world);
        } else {
          got[r] = g.recv_object((r + world - 1) % world);
          g.send_object(payload, (r + 1) % world);
        }
      }
      broadcasted[r] = g.broadcast_object(r == 0 ? Value("scheduler output") : Value(None{}), 0);
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    for (int r = 0; r < world; ++r) {
      if (world > 1) {
        int from = (r + world - 1) % world;
        CHECK(got[r] == Value(List{Value(from), Value("from"), Value(Bytes{1, 2}), Value(None{}), Value(0.5)}));
      }
      CHECK(broadcasted[r] == Value("scheduler output"));
    }
  }
}

TEST_CASE_TEMPLATE("tensor dicts: send/recv to next/prev, empty tensors keep their shape, broadcast", Over, RANKMESH_EVERY_TRANSPORT) {
  for (int world : {2, 3, 4, 8}) {
    CAPTURE(world);
    std::vector<TensorDict> received(world), broadcasted(world);
    auto errors = run_world<Over>(world, [&](ParallelState& s) {
      GroupCoordinator& g = s.world();
      int r = s.rank();
      TensorDict nested{{"positions", input_of(r, {2}, DType::i64)}};
      TensorDict dict{{"hidden_states", input_of(r, {2, 3})},
                      {"empty", Tensor::empty({0, 4}, DType::f16)},
                      {"step", r},
                      {"meta", nested}};
      if (r % 2 == 0) {
        g.send_tensor_dict(dict);
        received[r] = g.recv_tensor_dict();
      } else {
        received[r] = g.recv_tensor_dict();
        g.send_tensor_dict(dict);
      }
      broadcasted[r] = g.broadcast_tensor_dict(r == 1 ? dict : TensorDict{}, 1);
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    for (int r = 0; r < world; ++r) {
      int from = (r + world - 1) % world;
      const TensorDict& d = received[r];
      CHECK(floats(d.at("hidden_states").as<Tensor>()) == iota_from(static_cast<float>(from * 1000), 6));
      CHECK(d.at("empty").as<Tensor>().shape() == Shape{0, 4});
      CHECK(d.at("empty").as<Tensor>().dtype() == DType::f16);
      CHECK(d.at("step") == Value(from));
      CHECK(d.at("meta").as<TensorDict>().at("positions").as<Tensor>().data_as<std::int64_t>()[1] == from * 1000 + 1);
      CHECK(broadcasted[r].at("step") == Value(1));
      CHECK(floats(broadcasted[r].at("hidden_states").as<Tensor>()) == iota_from(1000.0f, 6));
    }
  }
}

TEST_CASE_TEMPLATE("tensor dicts, gather and broadcast: the caller may change a large tensor "
                   "once the call returns, the receiver gets what was sent", Over,
                   RANKMESH_EVERY_TRANSPORT) {
  // 16 MiB goes by reference over shm (copied while the receiver reads it) and by the writer
  // over tcp: the receiver starts only after the sender has overwritten its tensor.
  constexpr std::int64_t kElements = std::int64_t{4} << 20;
  constexpr int kRounds = 3;
  std::vector<std::vector<float>> sums(kRounds);
  std::vector<float> gathered, broadcasted;
  auto errors = run_world<Over>(2, [&](ParallelState& s) {
    GroupCoordinator& g = s.world();
    Tensor mine = Tensor::empty({kElements}, DType::f32);
    for (int round = 0; round < kRounds; ++round) {
      if (s.rank() == 0) {
        std::iota(mine.data_as<float>(), mine.data_as<float>() + kElements,
                  static_cast<float>(round));
        const TensorDict dict{{"hidden_states", mine}, {"round", round}};
        g.send_tensor_dict(dict, 1);  // not donated: the dict stays the caller's
        std::fill_n(mine.data_as<float>(), kElements, -1.0f);
        g.barrier();
      } else {
        g.barrier();
        TensorDict got = g.recv_tensor_dict(0);
        const Tensor& t = got.at("hidden_states").as<Tensor>();
        REQUIRE(t.numel() == kElements);
        const float* p = t.data_as<float>();
        sums[round] = {p[0], p[kElements / 2], p[kElements - 1]};
        for (std::int64_t i = 0; i < kElements; i += 4093)
          if (p[i] != static_cast<float>(round) + static_cast<float>(i) && sums[round].size() == 3)
            sums[round].push_back(static_cast<float>(i));  // the first element that differs
      }
    }
    // gather to rank 1, which asks for rank 0's part only once rank 0 has changed it (a message
    // outside the collectives says so).
    if (s.rank() == 0) {
      std::iota(mine.data_as<float>(), mine.data_as<float>() + kElements, 7.0f);
      g.gather(mine, 1);
      std::fill_n(mine.data_as<float>(), kElements, -1.0f);
      g.send_object(Value("changed"), 1);
    } else {
      REQUIRE(g.recv_object(0) == Value("changed"));
      std::fill_n(mine.data_as<float>(), kElements, 0.0f);
      const Tensor all = g.gather(mine, 1);
      REQUIRE(all.numel() == 2 * kElements);
      gathered = {all.data_as<float>()[0], all.data_as<float>()[kElements - 1],
                  all.data_as<float>()[kElements]};
    }
    // broadcast from rank 0, which changes its tensor as soon as broadcast returns; rank 1
    // comes late.
    if (s.rank() == 0) {
      std::iota(mine.data_as<float>(), mine.data_as<float>() + kElements, 3.0f);
      g.broadcast(mine, 0);
      std::fill_n(mine.data_as<float>(), kElements, -1.0f);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      g.broadcast(mine, 0);
      broadcasted = {mine.data_as<float>()[0], mine.data_as<float>()[kElements - 1]};
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (int round = 0; round < kRounds; ++round) {
    const float r = static_cast<float>(round);
    CHECK(sums[round] == std::vector<float>{r, r + static_cast<float>(kElements / 2),
                                            r + static_cast<float>(kElements - 1)});
  }
  CHECK(gathered == std::vector<float>{7.0f, 7.0f + static_cast<float>(kElements - 1), 0.0f});
  CHECK(broadcasted == std::vector<float>{3.0f, 3.0f + static_cast<float>(kElements - 1)});
}

TEST_CASE_TEMPLATE("all_gather: a member that overwrites its result as soon as the call returns "
                   "changes no other member's result", Over, RANKMESH_EVERY_TRANSPORT) {
  // An in-process peer copies a member's block out of that member's own result (a loan, not a
  // copy per peer): all_gather returns only once every peer has let go of it. In each round one
  // member fills its result with -1 at once; the others check theirs.
  constexpr std::int64_t kElements = std::int64_t{1} << 20;  // 4 MiB a member
  constexpr int kMembers = 3;
  constexpr int kRounds = 6;
  std::vector<std::vector<std::string>> wrong(kMembers);
  auto errors = run_world<Over>(kMembers, [&](ParallelState& s) {
    GroupCoordinator& g = s.world();
    Tensor mine = Tensor::empty({kElements}, DType::f32);
    for (int round = 0; round < kRounds; ++round) {
      const float base = static_cast<float>(100 * round + 10 * s.rank());
      std::iota(mine.data_as<float>(), mine.data_as<float>() + kElements, base);
      Tensor all = g.all_gather(mine);
      float* p = all.data_as<float>();
      if (round % kMembers == s.rank()) {
        std::fill_n(p, all.numel(), -1.0f);
      } else {
        for (int member = 0; member < kMembers; ++member)
          for (std::int64_t i = 0; i < kElements; i += 1021) {
            const float expected = static_cast<float>(100 * round + 10 * member) + static_cast<float>(i);
            if (p[member * kElements + i] != expected) {
              wrong[s.rank()].push_back("round " + std::to_string(round) + ", member " +
                                        std::to_string(member) + ", element " + std::to_string(i));
              break;
            }
          }
      }
      g.barrier();
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (int rank = 0; rank < kMembers; ++rank) {
    CAPTURE(rank);
    CHECK(wrong[static_cast<std::size_t>(rank)].empty());
  }
}

TEST_CASE_TEMPLATE("broadcast: a receiver that passes no tensor gets memory of its own, which the "
                   "root's changes after the call do not reach", Over, RANKMESH_EVERY_TRANSPORT) {
  // In-process receivers are loaned a large tensor of the root's: one that has no tensor to
  // fill copies it into memory of its own before it returns (the root waits for that).
  constexpr std::int64_t kElements = std::int64_t{1} << 18;  // 1 MiB
  std::vector<std::vector<float>> seen(3);
  std::vector<const void*> memory(3, nullptr);
  auto errors = run_world<Over>(3, [&](ParallelState& s) {
    GroupCoordinator& g = s.world();
    Tensor t;
    if (s.rank() == 0) {
      t = Tensor::empty({kElements}, DType::f32);
      std::iota(t.data_as<float>(), t.data_as<float>() + kElements, 5.0f);
    }
    Tensor got = g.broadcast(t, 0);
    memory[static_cast<std::size_t>(s.rank())] = got.data();
    if (s.rank() == 0) std::fill_n(t.data_as<float>(), kElements, -1.0f);
    g.barrier();  // the root has changed its tensor
    if (s.rank() != 0)
      seen[static_cast<std::size_t>(s.rank())] = {got.data_as<float>()[0],
                                                   got.data_as<float>()[kElements - 1]};
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (int rank = 1; rank < 3; ++rank) {
    CAPTURE(rank);
    CHECK(memory[static_cast<std::size_t>(rank)] != memory[0]);
    CHECK(seen[static_cast<std::size_t>(rank)] ==
          std::vector<float>{5.0f, 5.0f + static_cast<float>(kElements - 1)});
  }
  CHECK(memory[1] != memory[2]);
}

TEST_CASE_TEMPLATE("every group kind runs collectives among its own members", Over, RANKMESH_EVERY_TRANSPORT) {
  // world 16 = dp 2 x pp 2 x tp 2 x external dp 2, dcp 2.
  std::vector<std::array<float, kGroupKindCount>> sums(16);
  Runtime runtime(options_for<Over>(16, 2));
  auto errors = run_ranks(runtime, [&](ParallelState& s) {
    s.initialize_model_parallel(2, 2, 1, 2);  // tp, pp, pcp, dcp
    for (GroupKind kind : kAllGroupKinds) {
      Tensor one = Tensor::empty({1}, DType::f32);
      one.data_as<float>()[0] = static_cast<float>(s.rank());
      sums[s.rank()][static_cast<std::size_t>(kind)] = s.group(kind).all_reduce(one).data_as<float>()[0];
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  ParallelConfig config{16, 2, 2, 2, 2, 1};
  Layout layout = contiguous_layout(config);
  for (int r = 0; r < 16; ++r)
    for (GroupKind kind : kAllGroupKinds) {
      const Group& members = layout.group_of(kind, r);
      CHECK(sums[r][static_cast<std::size_t>(kind)] == static_cast<float>(std::accumulate(members.begin(), members.end(), 0)));
    }
}
