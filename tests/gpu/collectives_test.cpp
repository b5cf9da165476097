// Every GroupCoordinator operation with CUDA tensors, in one process: an embedded Runtime of 2
// and 4 ranks on the one GPU, joined by inproc channels and by shm (which stages device
// payloads through host memory). Device in, device out: each result is on the input's device
// with a ready event, and its bytes, copied back, equal the host reference.
#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "gpu_support.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace {

// One rank's results, copied back to the host, by operation.
using Results = std::map<std::string, Tensor>;

// Runs every operation on rank `s` with device inputs; returns host copies of the results.
Results run_every_operation(CudaBackend& cuda, ParallelState& s) {
  // Each rank issues its work on a stream of its own, as an engine thread does.
  auto own = cuda.create_stream();
  StreamGuard guard(*own);
  Stream& stream = *own;
  GroupCoordinator& g = s.world();
  const int r = s.rank();
  const int world = s.world_size();
  Results out;
  auto keep = [&](const std::string& what, const Tensor& t) { out[what] = to_host(cuda, stream, t, what); };

  // The first input comes from a kernel still spinning when the operation is issued: the
  // operation must follow the input's ready event.
  Tensor in = device_iota(cuda, stream, {3, 5}, static_cast<float>(r * 1000), 50);
  keep("all_reduce sum", g.all_reduce(in));
  keep("all_reduce max", g.all_reduce(in, ReduceOp::max));
  Tensor ints = Tensor::empty({7}, DType::i64);
  for (int i = 0; i < 7; ++i) ints.data_as<std::int64_t>()[i] = r * 1000 + i;
  keep("all_reduce i64", g.all_reduce(to_device(cuda, stream, ints)));

  Tensor pair = device_iota(cuda, stream, {2, 3}, static_cast<float>(r * 1000));
  keep("all_gather dim 0", g.all_gather(pair, 0));
  keep("all_gather dim -1", g.all_gather(pair));
  keep("all_gatherv", g.all_gatherv(device_iota(cuda, stream, {r + 1, 2}, static_cast<float>(r * 1000)), 0));

  keep("reduce_scatter", g.reduce_scatter(device_iota(cuda, stream, {2 * world, 2}, static_cast<float>(r * 1000)), 0));
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(world));
  for (int j = 0; j < world; ++j) sizes[static_cast<std::size_t>(j)] = j + 1;
  const std::int64_t rows = std::accumulate(sizes.begin(), sizes.end(), std::int64_t{0});
  keep("reduce_scatterv",
       g.reduce_scatterv(device_iota(cuda, stream, {rows, 2}, static_cast<float>(r * 1000)), sizes, 0));

  Tensor gathered = g.gather(device_iota(cuda, stream, {1, 2}, static_cast<float>(r * 1000)), world - 1, 0);
  if (r == world - 1) {
    keep("gather", gathered);
  } else {
    expect(!gathered.defined(), "gather: a tensor on a rank that is not the destination");
  }

  Tensor mine = device_iota(cuda, stream, {4}, static_cast<float>(r * 1000));
  Tensor broadcasted = g.broadcast(mine, world - 1);
  expect(broadcasted.shares_storage_with(mine), "broadcast: the result is not the tensor passed in");
  keep("broadcast", broadcasted);

  g.barrier();

  // Rank r sends j+1 rows to rank j; each row holds (sender, receiver).
  std::vector<std::int64_t> counts(static_cast<std::size_t>(world));
  std::int64_t all_rows = 0;
  for (int j = 0; j < world; ++j) all_rows += counts[static_cast<std::size_t>(j)] = j + 1;
  Tensor rows_out = Tensor::empty({all_rows, 2}, DType::i32);
  std::int64_t row = 0;
  for (int j = 0; j < world; ++j)
    for (int k = 0; k <= j; ++k, ++row) {
      rows_out.data_as<std::int32_t>()[row * 2] = r;
      rows_out.data_as<std::int32_t>()[row * 2 + 1] = j;
    }
  keep("all_to_all", g.all_to_all(to_device(cuda, stream, rows_out), counts));

  // Tensor dicts around the ring, then a broadcast from rank 1.
  TensorDict dict{{"hidden_states", device_iota(cuda, stream, {2, 3}, static_cast<float>(r * 1000), 20)},
                  {"step", r}};
  TensorDict received;
  if (r % 2 == 0) {
    g.send_tensor_dict(dict);
    received = g.recv_tensor_dict();
  } else {
    received = g.recv_tensor_dict();
    g.send_tensor_dict(dict);
  }
  expect(received.at("step") == Value((r + world - 1) % world), "recv_tensor_dict: step");
  keep("recv_tensor_dict", received.at("hidden_states").as<Tensor>());
  TensorDict from_one = g.broadcast_tensor_dict(r == 1 ? dict : TensorDict{}, 1);
  expect(from_one.at("step") == Value(1), "broadcast_tensor_dict: step");
  keep("broadcast_tensor_dict", from_one.at("hidden_states").as<Tensor>());

  // The donating form: the receiver may take the memory itself (inproc: no copy at all).
  if (r == 0) {
    g.send_tensor_dict(TensorDict{{"x", device_iota(cuda, stream, {8}, 500.0f, 20)}}, 1);
  } else if (r == 1) {
    keep("donated send", g.recv_tensor_dict(0).at("x").as<Tensor>());
  }
  g.barrier();
  return out;
}

float sum_over_ranks(int world, std::int64_t i) {
  float sum = 0;
  for (int src = 0; src < world; ++src) sum += static_cast<float>(src * 1000 + i);
  return sum;
}

void check_results(int world, const std::vector<Results>& got) {
  for (int r = 0; r < world; ++r) {
    CAPTURE(r);
    const Results& mine = got[static_cast<std::size_t>(r)];
    auto at = [&](const std::string& what) -> const Tensor& {
      auto it = mine.find(what);
      REQUIRE_MESSAGE(it != mine.end(), "no result for " << what);
      return it->second;
    };
    std::vector<float> sum, max;
    for (int i = 0; i < 15; ++i) {
      sum.push_back(sum_over_ranks(world, i));
      max.push_back(static_cast<float>((world - 1) * 1000 + i));
    }
    CHECK(at("all_reduce sum").shape() == Shape{3, 5});
    CHECK(floats(at("all_reduce sum")) == sum);
    CHECK(floats(at("all_reduce max")) == max);
    for (int i = 0; i < 7; ++i)
      CHECK(at("all_reduce i64").data_as<std::int64_t>()[i] == 1000 * world * (world - 1) / 2 + world * i);

    const Tensor& dim0 = at("all_gather dim 0");
    const Tensor& dim1 = at("all_gather dim -1");
    CHECK(dim0.shape() == Shape{2 * world, 3});
    CHECK(dim1.shape() == Shape{2, 3 * world});
    for (int src = 0; src < world; ++src)
      for (int row = 0; row < 2; ++row)
        for (int col = 0; col < 3; ++col) {
          const float want = static_cast<float>(src * 1000 + row * 3 + col);
          CHECK(dim0.data_as<float>()[(src * 2 + row) * 3 + col] == want);
          CHECK(dim1.data_as<float>()[row * 3 * world + src * 3 + col] == want);
        }
    CHECK(at("all_gatherv").shape() == Shape{world * (world + 1) / 2, 2});
    std::vector<float> uneven;
    for (int src = 0; src < world; ++src)
      for (float v : iota_from(static_cast<float>(src * 1000), (src + 1) * 2)) uneven.push_back(v);
    CHECK(floats(at("all_gatherv")) == uneven);

    CHECK(at("reduce_scatter").shape() == Shape{2, 2});
    for (int i = 0; i < 4; ++i) CHECK(at("reduce_scatter").data_as<float>()[i] == sum_over_ranks(world, r * 4 + i));
    const std::int64_t first_row = static_cast<std::int64_t>(r) * (r + 1) / 2;  // rows of ranks before r
    CHECK(at("reduce_scatterv").shape() == Shape{r + 1, 2});
    for (int k = 0; k < (r + 1) * 2; ++k)
      CHECK(at("reduce_scatterv").data_as<float>()[k] == sum_over_ranks(world, first_row * 2 + k));

    if (r == world - 1) {
      CHECK(at("gather").shape() == Shape{world, 2});
      for (int src = 0; src < world; ++src)
        CHECK(at("gather").data_as<float>()[src * 2 + 1] == static_cast<float>(src * 1000 + 1));
    }
    CHECK(floats(at("broadcast")) == iota_from(static_cast<float>((world - 1) * 1000), 4));

    const Tensor& exchanged = at("all_to_all");
    CHECK(exchanged.shape() == Shape{world * (r + 1), 2});
    for (std::int64_t row = 0; row < exchanged.shape()[0]; ++row) {
      CHECK(exchanged.data_as<std::int32_t>()[row * 2] == row / (r + 1));
      CHECK(exchanged.data_as<std::int32_t>()[row * 2 + 1] == r);
    }

    const int from = (r + world - 1) % world;
    CHECK(floats(at("recv_tensor_dict")) == iota_from(static_cast<float>(from * 1000), 6));
    CHECK(floats(at("broadcast_tensor_dict")) == iota_from(1000.0f, 6));
    if (r == 1) CHECK(floats(at("donated send")) == iota_from(500.0f, 8));
  }
}

}  // namespace

TEST_CASE_TEMPLATE("every GroupCoordinator operation with CUDA tensors equals the host reference on 2 and 4 ranks", Over,
                   OverInproc, OverShm) {
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  CudaBackend cuda;  // outlives the runtime, as RuntimeOptions::backends asks
  for (int world : {2, 4}) {
    CAPTURE(world);
    RuntimeOptions options = options_for<Over>(world);
    options.backends = {&cuda};
    std::vector<Results> got(static_cast<std::size_t>(world));
    auto errors = run_world([&](ParallelState& s) { got[static_cast<std::size_t>(s.rank())] = run_every_operation(cuda, s); },
                            options);
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    check_results(world, got);
  }
}

TEST_CASE_TEMPLATE("all_reduce of a large CUDA tensor, reduced piece by piece, equals the host reference", Over,
                   OverInproc, OverShm) {
  // 3,000,017 floats (12 MiB): every owner's chunk is several pieces, staged in several chunks.
  RANKMESH_REQUIRE_CUDA_OR_SKIP();
  CudaBackend cuda;
  const std::int64_t numel = 3'000'017;
  const int world = 4;
  RuntimeOptions options = options_for<Over>(world);
  options.backends = {&cuda};
  std::vector<Tensor> sums(world);
  auto errors = run_world([&](ParallelState& s) {
    auto own = cuda.create_stream();
    StreamGuard guard(*own);
    // Element i of rank r: r + (i % 1024), exact in f32 for every sum here.
    Tensor host = Tensor::empty({numel}, DType::f32);
    for (std::int64_t i = 0; i < numel; ++i) host.data_as<float>()[i] = static_cast<float>(s.rank() + i % 1024);
    Tensor sum = s.world().all_reduce(to_device(cuda, *own, host));
    sums[s.rank()] = to_host(cuda, *own, sum, "all_reduce");
  }, options);
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (int r = 0; r < world; ++r) {
    std::int64_t wrong = 0;
    for (std::int64_t i = 0; i < numel; ++i)
      wrong += sums[r].data_as<float>()[i] != static_cast<float>(6 + 4 * (i % 1024));
    CHECK(wrong == 0);
  }
}
