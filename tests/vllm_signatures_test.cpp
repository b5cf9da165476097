// Where the C++ API takes vLLM's signatures: dim -1 (the last dimension) by default, negative
// dims counting from the end, broadcast in place, and initialize_model_parallel(tp, pp, pcp, dcp).
#include <doctest/doctest.h>

#include <vector>

#include "rankmesh/error.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;

namespace {

// Rank r's input: element i is r * 1000 + i.
Tensor input_of(int rank, Shape shape) {
  Tensor t = Tensor::empty(shape, DType::f32);
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t.data_as<float>()[i] = static_cast<float>(rank * 1000 + i);
  return t;
}

std::vector<float> floats(const Tensor& t) {
  return std::vector<float>(t.data_as<float>(), t.data_as<float>() + t.numel());
}

}  // namespace

TEST_CASE("dim defaults to -1: all_gather, all_gatherv, reduce_scatter, reduce_scatterv and gather work along the last dimension of a 2-D tensor") {
  constexpr int kWorld = 2;
  std::vector<Tensor> gathered(kWorld), gathered_last(kWorld), gathered_v(kWorld), scattered(kWorld),
      scattered_last(kWorld), scattered_v(kWorld), at_root(kWorld);
  auto errors = run_world(kWorld, [&](ParallelState& s) {
    GroupCoordinator& g = s.world();
    const int r = s.rank();
    gathered[r] = g.all_gather(input_of(r, {2, 3}));
    gathered_last[r] = g.all_gather(input_of(r, {2, 3}), 1);
    gathered_v[r] = g.all_gatherv(input_of(r, {2, r + 1}));
    scattered[r] = g.reduce_scatter(input_of(r, {3, 2 * kWorld}));
    scattered_last[r] = g.reduce_scatter(input_of(r, {3, 2 * kWorld}), 1);
    const std::int64_t sizes[] = {1, 3};
    scattered_v[r] = g.reduce_scatterv(input_of(r, {2, 4}), sizes);
    at_root[r] = g.gather(input_of(r, {2, 1}), 0);
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (int r = 0; r < kWorld; ++r) {
    CAPTURE(r);
    CHECK(gathered[r].shape() == Shape{2, 6});
    CHECK(floats(gathered[r]) == floats(gathered_last[r]));
    CHECK(floats(gathered[r]) == std::vector<float>{0, 1, 2, 1000, 1001, 1002, 3, 4, 5, 1003, 1004, 1005});
    CHECK(gathered_v[r].shape() == Shape{2, 3});  // 1 + 2 columns
    CHECK(floats(gathered_v[r]) == std::vector<float>{0, 1000, 1001, 1, 1002, 1003});
    CHECK(scattered[r].shape() == Shape{3, 2});
    CHECK(floats(scattered[r]) == floats(scattered_last[r]));
    CHECK(scattered_v[r].shape() == Shape{2, r == 0 ? 1 : 3});
  }
  // Column c of row i sums (i * 4 + c) + (1000 + i * 4 + c).
  CHECK(floats(scattered[0]) == std::vector<float>{1000, 1002, 1008, 1010, 1016, 1018});
  CHECK(floats(scattered_v[1]) == std::vector<float>{1002, 1004, 1006, 1010, 1012, 1014});
  CHECK(at_root[0].shape() == Shape{2, 2});
  CHECK(floats(at_root[0]) == std::vector<float>{0, 1000, 1, 1001});
  CHECK_FALSE(at_root[1].defined());
}

TEST_CASE("a negative dim counts from the end, and one beyond the first dimension is refused") {
  constexpr int kWorld = 2;
  std::vector<Tensor> first(kWorld), counted_back(kWorld);
  auto errors = run_world(kWorld, [&](ParallelState& s) {
    GroupCoordinator& g = s.world();
    first[s.rank()] = g.all_gather(input_of(s.rank(), {2, 3}), 0);
    counted_back[s.rank()] = g.all_gather(input_of(s.rank(), {2, 3}), -2);
    try {
      g.gather(input_of(s.rank(), {2, 3}), 0, -3);
      FAIL("dim -3 of a 2-D tensor was accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::invalid_argument);
      CHECK(std::string(e.what()).find("dim -3") != std::string::npos);
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (int r = 0; r < kWorld; ++r) {
    CHECK(counted_back[r].shape() == Shape{4, 3});
    CHECK(floats(counted_back[r]) == floats(first[r]));
  }
}

TEST_CASE("broadcast fills the caller's tensor on every rank and returns it") {
  constexpr int kWorld = 3;
  constexpr int kSource = 1;
  std::vector<Tensor> passed(kWorld), returned(kWorld);
  std::vector<const void*> memory(kWorld);
  auto errors = run_world(kWorld, [&](ParallelState& s) {
    const int r = s.rank();
    passed[r] = input_of(r, {2, 2});
    memory[r] = passed[r].data();
    returned[r] = s.world().broadcast(passed[r], kSource);
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (int r = 0; r < kWorld; ++r) {
    CAPTURE(r);
    CHECK(passed[r].data() == memory[r]);  // filled in place
    CHECK(returned[r].shares_storage_with(passed[r]));
    CHECK(floats(passed[r]) == std::vector<float>{1000, 1001, 1002, 1003});
  }
}

TEST_CASE("broadcast into a tensor of another shape is a mismatch naming both sides") {
  auto errors = run_world(2, [](ParallelState& s) {
    Tensor mine = input_of(s.rank(), s.rank() == 0 ? Shape{4} : Shape{5});
    s.world().broadcast(mine, 0);
  });
  CHECK(errors[0].empty());  // the source returned before the receiver compared
  CHECK(errors[1].find("group rank 0 (rank 0) asked for broadcast float32 [4] root group rank 0") !=
        std::string::npos);
  CHECK(errors[1].find("this rank for broadcast float32 [5] root group rank 0") != std::string::npos);
}

TEST_CASE("initialize_model_parallel takes vLLM's order: tp, pp, pcp (prefill context) before dcp (decode context)") {
  std::vector<int> pcp_sizes(4), dcp_sizes(4);
  auto errors = run_world(4, [&](ParallelState& s) {
    s.initialize_model_parallel(2, 1, 2, 1);
    pcp_sizes[s.rank()] = s.pcp().world_size();
    dcp_sizes[s.rank()] = s.dcp().world_size();
    s.ensure_model_parallel_initialized(2, 1, 2, 1);  // the same sizes, in the same order
    s.destroy_model_parallel();
    s.ensure_model_parallel_initialized(2, 1, 1, 2);
    CHECK(s.pcp().world_size() == 1);
    CHECK(s.dcp().world_size() == 2);
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  for (int r = 0; r < 4; ++r) {
    CHECK(pcp_sizes[r] == 2);
    CHECK(dcp_sizes[r] == 1);
  }
}
