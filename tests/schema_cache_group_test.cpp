// The schema cache inside groups, over every transport: after a receive that timed out, after a
// send that failed and after a group is rebuilt, both sides agree on the schemas and every dict
// arrives as it was sent. In one process (inproc: the channel shares tensors) a small dict that
// is not donated is encoded as elsewhere; a donated one changes hands itself, no schema defined.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <string>

#include "../actors/src/coordinator/group_state.hpp"
#include "rank_world.hpp"
#include "rankmesh/error.hpp"
#include "world.hpp"

using namespace rankmesh;
using namespace rankmesh::test;
using namespace std::chrono_literals;

namespace {

constexpr auto kShort = 200ms;  // an operation meant to time out
constexpr auto kLong = 20s;     // an operation meant to succeed
const Group kPair{0, 1};

Tensor filled(std::int64_t n, int byte) {
  Tensor t = Tensor::empty({n}, DType::f32);
  std::memset(t.data(), byte, t.nbytes());
  return t;
}

// Two schemas: "a" dicts and "b" dicts.
TensorDict a_dict(std::int64_t step) { return TensorDict{{"hidden", filled(16, 1)}, {"step", step}}; }
TensorDict b_dict(std::int64_t step) {
  return TensorDict{{"hidden", filled(8, 2)}, {"residual", filled(8, 3)}, {"step", step}};
}

// Whether dicts over the transport's channels are encoded (through the schema cache) rather than
// handed over whole: over every transport for the small dicts here when they are not donated
// (ChannelTraits::encodes_dicts_up_to); a donated one (a temporary) is handed over in one
// process whatever its size.
bool defines_schemas(const Transport& transport, bool donated) {
  return !transport.traits().shares_tensors || !donated;
}

void expect(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error("expected " + what);
}

}  // namespace

TEST_CASE("schema cache: a schema defined by a frame that came after its receive timed out serves "
          "the next receive") {
  for (const Transport* transport : transport_table()) {
    CAPTURE(std::string(transport->name()));
    RankWorld world({0, 1}, *transport, *transport, kLong);
    Signal recv_failed;
    std::uint64_t sent_definitions = 0, received_definitions = 0;
    auto errors = world.run([&](int rank) {
      auto state = make_group_state(world.context(rank), GroupKind::world, 0, kPair);
      GroupState& raw = *state;
      GroupCoordinator group(std::move(state));
      if (rank == 0) {
        // Not donated: encoded over inproc too (donated, a small dict is handed over there).
        const TensorDict a0 = a_dict(0), a1 = a_dict(1), b2 = b_dict(2), b3 = b_dict(3);
        group.send_tensor_dict(a0, 1);
        group.send_tensor_dict(a1, 1);
        expect(recv_failed.wait(), "the receiver to time out");
        group.send_tensor_dict(b2, 1);  // defines "b"; its receive has timed out
        group.send_tensor_dict(b3, 1);  // a use of "b"
        sent_definitions = raw.schemas.to(1).definitions();
        return;
      }
      expect(group.recv_tensor_dict(0) == a_dict(0), "a0");
      expect(group.recv_tensor_dict(0) == a_dict(1), "a1 (a use of the cached schema)");
      group.set_timeout(kShort);
      try {
        group.recv_tensor_dict(0);
        expect(false, "the receive to time out");
      } catch (const Error& e) {
        expect(e.code() == Errc::timeout, std::string("a timeout, got: ") + e.what());
      }
      recv_failed.raise();
      group.set_timeout(kLong);
      expect(group.recv_tensor_dict(0) == b_dict(3), "b3, decoded by the definition in b2's frame");
      received_definitions = raw.schemas.from(0).definitions();
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    const std::uint64_t defined = defines_schemas(*transport, false) ? 2 : 0;
    CHECK(sent_definitions == defined);
    CHECK(received_definitions == defined);
  }
}

TEST_CASE("schema cache: a send that failed makes the sender define its schemas again, and the "
          "receiver decodes every dict") {
  for (const Transport* transport : transport_table()) {
    CAPTURE(std::string(transport->name()));
    RankWorld world({0, 1}, *transport, *transport, kLong);
    Signal send_failed;
    std::int64_t delivered = 0;
    std::uint64_t before = 0, after = 0;
    auto errors = world.run([&](int rank) {
      auto state = make_group_state(world.context(rank), GroupKind::world, 0, kPair);
      GroupState& raw = *state;
      GroupCoordinator group(std::move(state));
      // Large payloads fill every transport's channel while nobody receives.
      auto big = [](std::int64_t step) {
        return TensorDict{{"payload", filled(64 << 10, 5)}, {"step", step}};
      };
      if (rank == 0) {
        group.set_timeout(kShort);
        for (;; ++delivered) {
          try {
            group.send_tensor_dict(big(delivered), 1);
          } catch (const Error& e) {
            expect(e.code() == Errc::timeout, std::string("a timeout, got: ") + e.what());
            break;
          }
        }
        before = raw.schemas.to(1).definitions();
        send_failed.raise();
        group.set_timeout(kLong);
        group.send_tensor_dict(big(1000), 1);  // defined afresh
        group.send_tensor_dict(big(1001), 1);  // a use again
        after = raw.schemas.to(1).definitions();
        return;
      }
      expect(send_failed.wait(), "a send to time out");
      for (std::int64_t i = 0; i < delivered; ++i)
        expect(group.recv_tensor_dict(0) == big(i), "message " + std::to_string(i));
      try {
        group.recv_tensor_dict(0);  // the failed send's partner: the gap is named
        expect(false, "the failed send's receive to fail");
      } catch (const Error& e) {
        expect(e.code() == Errc::mismatch, std::string("a mismatch, got: ") + e.what());
      }
      expect(group.recv_tensor_dict(0) == big(1000), "message 1000");
      expect(group.recv_tensor_dict(0) == big(1001), "message 1001");
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    REQUIRE(delivered > 0);
    CHECK(before == (defines_schemas(*transport, true) ? 1 : 0));
    CHECK(after == (defines_schemas(*transport, true) ? 2 : 0));
  }
}

TEST_CASE("schema cache: a rebuilt group starts with no schemas on either side") {
  for (const Transport* transport : transport_table()) {
    CAPTURE(std::string(transport->name()));
    RankWorld world({0, 1}, *transport, *transport, kLong);
    std::uint64_t first = 0, rebuilt = 0, received = 0;
    auto errors = world.run([&](int rank) {
      for (int incarnation = 0; incarnation < 2; ++incarnation) {
        auto state = make_group_state(world.context(rank), GroupKind::world, 0, kPair);
        GroupState& raw = *state;
        GroupCoordinator group(std::move(state));
        for (std::int64_t step = 0; step < 3; ++step) {
          if (rank == 0) {
            const TensorDict dict = a_dict(step);  // not donated: encoded over inproc too
            group.send_tensor_dict(dict, 1);
          } else {
            expect(group.recv_tensor_dict(0) == a_dict(step), "a" + std::to_string(step));
          }
        }
        group.barrier();  // both sides are done with this incarnation
        if (rank == 0) (incarnation == 0 ? first : rebuilt) = raw.schemas.to(1).definitions();
        if (rank == 1 && incarnation == 1) received = raw.schemas.from(0).definitions();
      }
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    const std::uint64_t defined = defines_schemas(*transport, false) ? 1 : 0;
    CHECK(first == defined);
    CHECK(rebuilt == defined);
    CHECK(received == defined);
  }
}
