// Collective consensus (coordinator/collective_request.hpp): members whose collectives diverge —
// another shape, dtype, reduce op, dimension, root, operation, order or call site — fail with an
// Error(mismatch) naming both requests, on every member and soon (well within the timeout),
// instead of hanging or returning a wrong result; members that agree (all_gatherv's differing
// rows, a broadcast receiver passing no tensor, asynchronous calls under a CallSite) still work.
#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "rankmesh/call_site.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/parallel_state.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;
using namespace std::chrono_literals;

namespace {

// Long: a member that failed by its timeout would say so ("waited 20000 ms"), never "the
// members' collectives diverged", which every failing member's error is checked for.
constexpr auto kTimeout = 20s;

Tensor filled(const Shape& shape, DType dtype = DType::f32, float value = 1) {
  Tensor t = Tensor::empty(shape, dtype);
  if (dtype == DType::f32)
    for (std::int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = value;
  return t;
}

// Runs fn(tp group, rank) on every rank of a `world`-rank world (tp = world) over `Over`;
// returns every rank's error.
template <class Over>
std::vector<std::string> diverge(int world, const std::function<void(GroupCoordinator&, int)>& fn) {
  RuntimeOptions options = options_for<Over>(world);
  options.timeout = kTimeout;
  return run_world(
      [&](ParallelState& state) {
        state.initialize_model_parallel(world);
        fn(state.tp(), state.rank());
      },
      options);
}

// Every member failed, each error naming each fragment (both sides' requests).
void expect_all_failed_naming(const std::vector<std::string>& errors,
                              std::initializer_list<const char*> fragments) {
  for (std::size_t rank = 0; rank < errors.size(); ++rank) {
    CAPTURE(rank);
    CHECK_MESSAGE(errors[rank].find("collectives diverged") != std::string::npos,
                  "rank " << rank << " did not fail for the divergence: " << joined(errors));
    for (const char* fragment : fragments)
      CHECK_MESSAGE(errors[rank].find(fragment) != std::string::npos,
                    "missing '" << std::string(fragment) << "' in: " << errors[rank]);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("consensus: all_reduce of another shape fails on every member naming both",
                   Over, RANKMESH_EVERY_TRANSPORT) {
  auto errors = diverge<Over>(4, [](GroupCoordinator& tp, int rank) {
    tp.all_reduce(filled(rank == 3 ? Shape{8, 2048} : Shape{8, 4096}));
  });
  expect_all_failed_naming(errors, {"all_reduce float32 [8, 4096] sum", "all_reduce float32 [8, 2048] sum",
                                    "collectives diverged"});
  // Whoever found it first (rank 3 itself, or a member that heard from it), rank 3 is named.
  for (const auto& error : errors) CHECK_MESSAGE(error.find("(rank 3)") != std::string::npos, error);
}

TEST_CASE_TEMPLATE("consensus: another reduce op or dtype with the same bytes fails instead of "
                   "computing a wrong result", Over, RANKMESH_EVERY_TRANSPORT) {
  auto by_op = diverge<Over>(2, [](GroupCoordinator& tp, int rank) {
    tp.all_reduce(filled({16}), rank == 1 ? ReduceOp::max : ReduceOp::sum);
  });
  expect_all_failed_naming(by_op, {"all_reduce float32 [16] sum", "all_reduce float32 [16] max"});
  auto by_dtype = diverge<Over>(2, [](GroupCoordinator& tp, int rank) {
    tp.all_reduce(rank == 1 ? filled({32}, DType::i16) : filled({16}, DType::f32));
  });
  expect_all_failed_naming(by_dtype, {"all_reduce float32 [16] sum", "all_reduce int16 [32] sum"});
}

TEST_CASE_TEMPLATE("consensus: gathers compare what must agree: all_gather every dimension, "
                   "all_gatherv all but the gathered one", Over, RANKMESH_EVERY_TRANSPORT) {
  auto errors = diverge<Over>(3, [](GroupCoordinator& tp, int rank) {
    tp.all_gather(filled({2, 4}), rank == 2 ? 0 : 1);
  });
  expect_all_failed_naming(errors, {"all_gather float32 [2, 4] along dim 1", "all_gather float32 [2, 4] along dim 0"});
  // Differing rows are all_gatherv's purpose; another width is not.
  auto fine = diverge<Over>(3, [](GroupCoordinator& tp, int rank) {
    Tensor all = tp.all_gatherv(filled({rank + 1, 4}), 0);
    if (all.shape()[0] != 6) throw std::runtime_error("wrong rows");
  });
  CHECK_MESSAGE(all_ok(fine), joined(fine));
  auto wider = diverge<Over>(3, [](GroupCoordinator& tp, int rank) {
    tp.all_gatherv(filled({rank + 1, rank == 1 ? 5 : 4}), 0);
  });
  expect_all_failed_naming(wider, {"all_gatherv float32 [*, 4] along dim 0", "all_gatherv float32 [*, 5] along dim 0"});
}

TEST_CASE_TEMPLATE("consensus: a member calling another operation, or in another order, fails "
                   "every member, also those waiting on someone else", Over, RANKMESH_EVERY_TRANSPORT) {
  // Rank 2 joins a barrier while the others all_reduce: rank 1 waits on rank 2's all_reduce
  // input, which never comes; rank 0 (the barrier's gatherer) sees rank 2's barrier message.
  auto errors = diverge<Over>(3, [](GroupCoordinator& tp, int rank) {
    if (rank == 2) {
      tp.barrier();
    } else {
      tp.all_reduce(filled({4}));
    }
  });
  expect_all_failed_naming(errors, {"barrier", "all_reduce float32 [4] sum", "collectives diverged"});
  auto reordered = diverge<Over>(2, [](GroupCoordinator& tp, int rank) {
    if (rank == 0) {
      tp.all_reduce(filled({4}));
      tp.barrier();
    } else {
      tp.barrier();
      tp.all_reduce(filled({4}));
    }
  });
  expect_all_failed_naming(reordered, {"barrier", "all_reduce float32 [4] sum"});
}

TEST_CASE_TEMPLATE("consensus: broadcast receivers compare the source's tensor with theirs; one "
                   "passing none takes any", Over, RANKMESH_EVERY_TRANSPORT) {
  auto errors = diverge<Over>(3, [](GroupCoordinator& tp, int rank) {
    Tensor t = filled(rank == 2 ? Shape{3} : Shape{4});
    tp.broadcast(t, 0);
    tp.barrier();  // the source and rank 1 returned from the broadcast: they learn here
  });
  expect_all_failed_naming(errors, {"broadcast float32 [4] root group rank 0", "broadcast float32 [3] root group rank 0"});
  auto fine = diverge<Over>(3, [](GroupCoordinator& tp, int rank) {
    Tensor t = rank == 0 ? filled({4}, DType::f32, 7) : Tensor{};
    tp.broadcast(t, 0);
    if (t.numel() != 4 || t.data_as<float>()[3] != 7) throw std::runtime_error("wrong broadcast");
  });
  CHECK_MESSAGE(all_ok(fine), joined(fine));
}

TEST_CASE_TEMPLATE("consensus: members that hear nobody learn at once: gather's senders from the "
                   "root, a second broadcast source at the next collective", Over, RANKMESH_EVERY_TRANSPORT) {
  // Rank 2's part differs: only the root hears it; rank 1 and rank 2 returned, and their next
  // operation on the group fails with the root's finding.
  auto gathered = diverge<Over>(3, [](GroupCoordinator& tp, int rank) {
    tp.gather(filled(rank == 2 ? Shape{2, 3} : Shape{2, 4}), 0, 0);
    tp.barrier();
  });
  expect_all_failed_naming(gathered, {"gather float32 [2, 4] along dim 0 root group rank 0",
                                      "gather float32 [2, 3] along dim 0 root group rank 0"});
  // Both believe they are the source: neither receives, each returns its own object; the
  // other's message, of a broadcast that completed without it, fails the next collective.
  auto two_sources = diverge<Over>(2, [](GroupCoordinator& tp, int rank) {
    tp.broadcast_object(Value(std::int64_t{rank}), rank);
    tp.barrier();
  });
  expect_all_failed_naming(two_sources, {"broadcast_object root group rank", "a collective that completed here without it"});
}

TEST_CASE_TEMPLATE("consensus: broadcast_object and broadcast_tensor_dict compare their roots",
                   Over, RANKMESH_EVERY_TRANSPORT) {
  // Rank 2 believes it is the source of the second broadcast: the first member to hear from it
  // again (rank 0, gathering the barrier) finds its object and fails the group.
  auto errors = diverge<Over>(3, [](GroupCoordinator& tp, int rank) {
    tp.broadcast_object(Value(std::int64_t{5}), 0);  // agreed: the ring is set up
    tp.broadcast_object(Value(std::int64_t{6}), rank == 2 ? 2 : 0);
    tp.barrier();
  });
  expect_all_failed_naming(errors, {"broadcast_object root group rank 2"});
  auto dicts = diverge<Over>(2, [](GroupCoordinator& tp, int rank) {
    TensorDict dict{{"x", filled({2})}};
    tp.broadcast_tensor_dict(dict, rank == 1 ? 1 : 0);
    tp.barrier();
  });
  expect_all_failed_naming(dicts, {"broadcast_tensor_dict root group rank"});
}

TEST_CASE_TEMPLATE("consensus: call-site tags must agree, asynchronous calls carry the issuing "
                   "thread's", Over, RANKMESH_EVERY_TRANSPORT) {
  auto errors = diverge<Over>(2, [](GroupCoordinator& tp, int rank) {
    CallSite site(rank == 0 ? "layer3.attn" : "layer3.mlp");
    tp.all_reduce(filled({4}));
  });
  expect_all_failed_naming(errors, {"all_reduce float32 [4] sum at 'layer3.attn'",
                                    "all_reduce float32 [4] sum at 'layer3.mlp'"});
  auto fine = diverge<Over>(2, [](GroupCoordinator& tp, int rank) {
    CallSite site("layer3.attn");
    Tensor sum = rank == 0 ? tp.async_all_reduce(filled({4})).wait(kTimeout) : tp.all_reduce(filled({4}));
    if (sum.data_as<float>()[0] != 2) throw std::runtime_error("wrong sum");
  });
  CHECK_MESSAGE(all_ok(fine), joined(fine));
  CHECK_THROWS_AS(CallSite(std::string(CallSite::kMaxTag + 1, 'x')), Error);
}

TEST_CASE("consensus: a group that failed fails its later calls at once; other groups and a "
          "rebuilt group work") {
  RuntimeOptions options = options_for<OverInproc>(4);
  options.timeout = kTimeout;
  auto errors = run_world(
      [](ParallelState& state) {
        state.initialize_model_parallel(2);
        const int rank = state.rank();
        bool failed = false;
        try {
          state.tp().all_reduce(filled({rank == 1 ? 5 : 4}));
        } catch (const Error& e) {
          failed = e.code() == Errc::mismatch;
        }
        const bool in_bad_group = rank < 2;
        if (failed != in_bad_group) throw std::runtime_error("wrong members failed");
        if (in_bad_group) {
          try {
            state.tp().barrier();
            throw std::runtime_error("a call on the failed group succeeded");
          } catch (const Error& e) {
            if (e.code() != Errc::mismatch) throw;
          }
        }
        Tensor sum = state.world().all_reduce(filled({4}));  // another group still works
        if (sum.data_as<float>()[0] != 4) throw std::runtime_error("wrong world sum");
        state.destroy_model_parallel();
        state.initialize_model_parallel(2, 1);
        sum = state.tp().all_reduce(filled({4}));
        if (sum.data_as<float>()[0] != 2) throw std::runtime_error("wrong sum after rebuild");
      },
      options);
  CHECK_MESSAGE(all_ok(errors), joined(errors));
}
