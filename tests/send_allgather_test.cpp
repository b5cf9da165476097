// send-allgather across nodes: when the senders of a tensor dict slice it (each sends 1/n to
// its peer, the receivers all-gather the slices), and that every sender of an all-gather group
// chooses alike, on any topology. Ranks of one process over shm within a node and tcp between
// nodes (tests/rank_world.hpp); the bytes each rank sent to each peer are observed.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "rank_world.hpp"
#include "rankmesh/error.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;
using namespace std::chrono_literals;

namespace {

constexpr std::uint32_t kTensorDictOp = 2;  // OpCode::tensor_dict

Tensor numbered(std::int64_t elements, float offset) {
  Tensor t = Tensor::empty({elements}, DType::f32);
  float* values = t.data_as<float>();
  for (std::int64_t i = 0; i < elements; ++i) values[i] = offset + static_cast<float>(i);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// Payload bytes of each tensor dict `from` sent to `to`.
std::vector<std::size_t> dict_payloads(const RankWorld& world, int from, int to) {
  std::vector<std::size_t> bytes;
  for (const Sent& frame : world.sent(from, to))
    if (frame.op == kTensorDictOp) bytes.push_back(frame.payload_bytes);
  return bytes;
}

void expect(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error("expected " + what);
}

// tp groups of two consecutive ranks; pp groups of the ranks with the same tp index.
struct Stages {
  Stages(const RankWorld& world, int rank, int stages)
      : tp(make_group_state(world.context(rank), GroupKind::tp, rank / 2,
                            Group{rank / 2 * 2, rank / 2 * 2 + 1})),
        pp(make_group_state(world.context(rank), GroupKind::pp, rank % 2, pp_members(rank, stages))) {}
  static Group pp_members(int rank, int stages) {
    Group members;
    for (int stage = 0; stage < stages; ++stage) members.push_back(rank % 2 + 2 * stage);
    return members;
  }
  GroupCoordinator tp;
  GroupCoordinator pp;
};

}  // namespace

TEST_CASE("send-allgather: every sender of an all-gather group slices alike on a mixed topology") {
  // 6 ranks, 3 per node, tp 2 x pp 3: stage 0 is ranks 0, 1 (node 0), stage 1 ranks 2 (node 0)
  // and 3 (node 1), stage 2 ranks 4, 5 (node 1). From stage 0, rank 0's peer shares its node
  // and rank 1's does not: both must slice (or neither), or rank 3 all-gathers alone.
  RankWorld world({0, 0, 0, 1, 1, 1}, shm_transport(), tcp_transport(), 10s);
  constexpr std::int64_t kElements = 512 << 10;  // 2 MiB of f32
  const Tensor expected = numbered(kElements, 0.5f);
  std::vector<std::string> mismatched(6);
  auto errors = world.run([&](int rank) {
    Stages groups(world, rank, 3);
    const int stage = rank / 2;
    TensorDict dict;
    if (stage == 0) {
      dict = TensorDict{{"hidden_states", numbered(kElements, 0.5f)}, {"step", 7}};
    } else {
      dict = groups.pp.recv_tensor_dict(stage - 1, &groups.tp);
      expect(same_bytes(dict.at("hidden_states").as<Tensor>(), expected) && dict.at("step") == Value(7),
             "stage " + std::to_string(stage) + " to receive stage " + std::to_string(stage - 1) + "'s dict");
    }
    if (stage < 2) groups.pp.send_tensor_dict(dict, stage + 1, &groups.tp);
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  // Stage 0 (one node) sliced towards both peers; stage 1 spans two nodes: whole.
  CHECK(dict_payloads(world, 0, 2) == std::vector<std::size_t>{std::size_t{1} << 20});
  CHECK(dict_payloads(world, 1, 3) == std::vector<std::size_t>{std::size_t{1} << 20});
  CHECK(dict_payloads(world, 2, 4) == std::vector<std::size_t>{std::size_t{2} << 20});
  CHECK(dict_payloads(world, 3, 5) == std::vector<std::size_t>{std::size_t{2} << 20});
}

TEST_CASE("send-allgather across two nodes: sliced from 1 MiB, whole just below, whole where the "
          "per-key rule says false") {
  // tp 2 x pp 2, one stage per node: every sender's peer is on the other node.
  RankWorld world({0, 0, 1, 1}, tcp_transport(), tcp_transport(), 10s);
  constexpr std::int64_t kMiB = 1 << 20;
  struct Case {
    std::int64_t elements;  // of f32
    AllGatherTensors rule;
  };
  const std::vector<Case> cases = {
      {kMiB / 4, {}},                  // exactly 1 MiB: sliced
      {kMiB / 4 - 2, {}},              // 8 bytes less: whole
      {kMiB / 2, {{"x", false}}},      // 2 MiB, but the rule says whole
  };
  auto errors = world.run([&](int rank) {
    Stages groups(world, rank, 2);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      const Tensor x = numbered(c.elements, static_cast<float>(i));
      if (rank < 2) {
        groups.pp.send_tensor_dict(TensorDict{{"x", x}}, 1, &groups.tp, c.rule);
      } else {
        TensorDict got = groups.pp.recv_tensor_dict(0, &groups.tp, c.rule);
        expect(same_bytes(got.at("x").as<Tensor>(), x), "case " + std::to_string(i) + " intact");
      }
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  const std::vector<std::size_t> expected = {std::size_t{1} << 19, (std::size_t{1} << 20) - 8,
                                             std::size_t{2} << 20};
  CHECK(dict_payloads(world, 0, 2) == expected);
  CHECK(dict_payloads(world, 1, 3) == expected);
}
