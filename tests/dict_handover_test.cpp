// In one process a tensor dict of more than a slot's bytes of tensors changes hands whole
// (Frame::dict): no metadata is written or read. What a receiver gets must still be what the
// codec would have given it — a dict of its own, equal to the one sent — and a dict handed over
// must never pass for another frame's. A smaller dict is encoded, as between processes.
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include "../actors/src/coordinator/group_state.hpp"
#include "inproc/inproc_transport.hpp"
#include "rank_world.hpp"
#include "rankmesh/error.hpp"
#include "tcp/tcp_transport.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;
using namespace std::chrono_literals;

namespace {

Tensor filled(std::int64_t n, int byte) {
  Tensor t = Tensor::empty({n}, DType::f32);
  std::memset(t.data(), byte, t.nbytes());
  return t;
}

bool holds_bytes(const Tensor& t, int byte) {
  for (std::size_t i = 0; i < t.nbytes(); ++i)
    if (static_cast<const unsigned char*>(t.data())[i] != byte) return false;
  return true;
}

// Every kind of entry: tensors (copied into one block), a nested dict, an empty tensor, an empty
// dict, plain values of each kind; 1 KiB of tensors, so that it is handed over.
TensorDict every_kind(int byte) {
  return TensorDict{{"hidden", filled(256, byte)},
                    {"inner", TensorDict{{"positions", filled(4, byte + 1)}, {"n", 3}}},
                    {"empty", Tensor::empty({0, 4}, DType::f16)},
                    {"nothing", TensorDict{}},
                    {"list", List{Value(1), Value("two"), Value(Bytes{3})}},
                    {"name", "a step of a pipeline, longer than a short string"},
                    {"temperature", 0.5},
                    {"none", None{}}};
}

void expect(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error("expected " + what);
}

}  // namespace

TEST_CASE("dict hand-over: the received dict is the receiver's own, equal to what was sent, and "
          "neither side's later changes reach the other") {
  RankWorld world({0, 0}, inproc_transport(), inproc_transport(), 20s);
  const TensorDict expected = every_kind(7);
  Signal received, changed;
  std::uint64_t definitions = 0;
  const void* sent_hidden = nullptr;
  const void* donated_hidden = nullptr;
  auto errors = world.run([&](int rank) {
    auto state = make_group_state(world.context(rank), GroupKind::world, 0, Group{0, 1});
    GroupState& raw = *state;
    GroupCoordinator group(std::move(state));
    if (rank == 0) {
      TensorDict mine = every_kind(7);
      sent_hidden = mine.at("hidden").as<Tensor>().data();
      group.send_tensor_dict(mine, 1);
      // The caller's own, from the moment send returns.
      std::memset(mine.at("hidden").as<Tensor>().data(), 0, 64 * sizeof(float));
      mine.set("added by the sender", 1);
      mine.find("inner")->as<TensorDict>().set("n", 4);
      received.raise();
      expect(changed.wait(), "the receiver to change its dict");
      mine.erase("added by the sender");
      mine.find("inner")->as<TensorDict>().set("n", 3);
      std::memset(mine.at("hidden").as<Tensor>().data(), 7, 64 * sizeof(float));
      expect(mine == every_kind(7), "the sender's dict untouched by the receiver's changes");
      TensorDict donated = every_kind(9);
      donated_hidden = donated.at("hidden").as<Tensor>().data();
      group.send_tensor_dict(std::move(donated), 1);
      definitions = raw.schemas.to(1).definitions();
      return;
    }
    TensorDict got = group.recv_tensor_dict(0);
    expect(received.wait(), "the sender to change its dict");
    expect(got == expected, "the dict as it was sent, though the sender changed its own since");
    expect(got.at("hidden").as<Tensor>().data() != sent_hidden, "a copy of the sender's tensor");
    const Tensor& empty = got.at("empty").as<Tensor>();
    expect(empty.shape() == Shape{0, 4} && empty.dtype() == DType::f16, "the empty tensor's shape");
    std::memset(got.at("hidden").as<Tensor>().data(), 1, 64 * sizeof(float));
    got.set("added by the receiver", 2);
    got.find("inner")->as<TensorDict>().set("n", 5);
    got.find("list")->as<List>().push_back(Value(4));
    changed.raise();
    TensorDict donated = group.recv_tensor_dict(0);
    expect(donated == every_kind(9), "the donated dict");
    // Donated: its tensors themselves change hands, not copies.
    expect(donated.at("hidden").as<Tensor>().data() == donated_hidden, "the donated memory");
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK(definitions == 0);  // nothing was encoded
}

TEST_CASE("dict hand-over: a dict left in a frame that was refused never passes for a later "
          "frame from another transport") {
  // Ranks 0 and 1 share a process (inproc); rank 2 is on another node (tcp).
  RankWorld world({0, 0, 1}, inproc_transport(), tcp_transport(), 20s);
  std::string refused;
  auto errors = world.run([&](int rank) {
    auto state = make_group_state(world.context(rank), GroupKind::world, 0, Group{0, 1, 2});
    GroupCoordinator group(std::move(state));
    if (rank == 0) {
      group.send_tensor_dict(TensorDict{{"from", 0}, {"x", filled(256, 0)}}, 1);  // handed over
    } else if (rank == 2) {
      group.send_tensor_dict(TensorDict{{"from", 2}, {"x", filled(4, 2)}}, 1);
    } else {
      try {
        group.recv_object(0);  // rank 0 sent a tensor dict: refused, out of order
        expect(false, "the receive to be refused");
      } catch (const Error& e) {
        refused = e.what();
      }
      // Nothing in between: the next frame this rank takes in is rank 2's, over tcp.
      const TensorDict got = group.recv_tensor_dict(2);
      expect(got.at("from") == Value(2), "rank 2's dict, not the dict refused before");
      expect(holds_bytes(got.at("x").as<Tensor>(), 2), "rank 2's tensor");
    }
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK_MESSAGE(refused.find("which sent send_tensor_dict #0") != std::string::npos, refused);
}

TEST_CASE("dict hand-over: a small dict that was not donated is encoded, the receiver's tensors "
          "its own; a donated one, or one whose encoding would not fit a slot, is handed over") {
  RankWorld world({0, 0}, inproc_transport(), inproc_transport(), 20s);
  const auto small = [](int byte) { return TensorDict{{"hidden", filled(64, byte)}, {"step", byte}}; };
  // A tiny tensor beside a value larger than any decoder accepts in one frame (16 MiB of
  // metadata): encoded, its receive would fail; handed over, it arrives.
  const auto long_text = [] {
    return TensorDict{{"x", filled(2, 5)}, {"text", std::string(std::size_t{17} << 20, 't')}};
  };
  const void* sent_hidden = nullptr;
  const void* donated_hidden = nullptr;
  std::uint64_t sent_definitions = 0, received_definitions = 0;
  auto errors = world.run([&](int rank) {
    auto state = make_group_state(world.context(rank), GroupKind::world, 0, Group{0, 1});
    GroupState& raw = *state;
    GroupCoordinator group(std::move(state));
    if (rank == 0) {
      const TensorDict mine = small(3);
      sent_hidden = mine.at("hidden").as<Tensor>().data();
      group.send_tensor_dict(mine, 1);
      group.send_tensor_dict(mine, 1);
      TensorDict donated = small(4);
      donated_hidden = donated.at("hidden").as<Tensor>().data();
      group.send_tensor_dict(std::move(donated), 1);
      const TensorDict text = long_text();
      group.send_tensor_dict(text, 1);
      sent_definitions = raw.schemas.to(1).definitions();
      return;
    }
    for (int i = 0; i < 2; ++i) {
      const TensorDict got = group.recv_tensor_dict(0);
      expect(got == small(3), "the dict as it was sent");
      expect(got.at("hidden").as<Tensor>().data() != sent_hidden, "the receiver's own tensor");
    }
    const TensorDict donated = group.recv_tensor_dict(0);
    expect(donated == small(4), "the donated dict");
    expect(donated.at("hidden").as<Tensor>().data() == donated_hidden,
           "the donated memory, however small");
    expect(group.recv_tensor_dict(0) == long_text(), "the dict with a long text, whole");
    received_definitions = raw.schemas.from(0).definitions();
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
  CHECK(sent_definitions == 1);  // the small dict's schema, defined once, then used
  CHECK(received_definitions == 1);
}

TEST_CASE("dict hand-over: a small dict nested deeper than any decoder accepts is handed over, "
          "and arrives") {
  // 34 levels (FrameLimits allows 32) in a few hundred bytes: encoded, their receives would fail.
  const auto deep_dict = [] {
    TensorDict dict{{"x", filled(2, 4)}};
    for (int level = 0; level < 34; ++level) dict = TensorDict{{"d", std::move(dict)}};
    return dict;
  };
  const auto deep_list = [] {
    Value list = Value(None{});
    for (int level = 0; level < 34; ++level) list = Value(List{std::move(list)});
    return TensorDict{{"x", filled(2, 4)}, {"l", std::move(list)}};
  };
  RankWorld world({0, 0}, inproc_transport(), inproc_transport(), 20s);
  auto errors = world.run([&](int rank) {
    auto state = make_group_state(world.context(rank), GroupKind::world, 0, Group{0, 1});
    GroupCoordinator group(std::move(state));
    if (rank == 0) {
      const TensorDict dicts = deep_dict(), lists = deep_list();
      group.send_tensor_dict(dicts, 1);
      group.send_tensor_dict(lists, 1);
      return;
    }
    expect(group.recv_tensor_dict(0) == deep_dict(), "the deeply nested dict, whole");
    expect(group.recv_tensor_dict(0) == deep_list(), "the deeply nested list, whole");
  });
  REQUIRE_MESSAGE(all_ok(errors), joined(errors));
}
