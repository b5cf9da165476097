// After a timeout or a failed send, a group keeps delivering the right message to the right
// receive — over inproc, shm and tcp alike: no receive returns a message meant for another,
// nothing is dropped without an error.
#include <doctest/doctest.h>

#include <chrono>
#include <algorithm>
#include <cstring>
#include <string>
#include <thread>

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

// Message `index` of the sender: its number and 256 KiB of payload (lent by shm, large enough
// to fill tcp's socket buffers after a few), so that every transport's channel fills up.
TensorDict message(std::int64_t index) {
  Tensor payload = Tensor::empty({64 << 10}, DType::f32);
  std::memset(payload.data(), static_cast<int>(index & 0x7f), payload.nbytes());
  return TensorDict{{"index", index}, {"payload", payload}};
}

std::int64_t index_of(const TensorDict& dict) { return dict.at("index").as<std::int64_t>(); }

// Inside a rank's thread: a failed expectation ends the rank with this error text.
void expect(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error("expected " + what);
}

// Fills the channel to rank 1 until a send times out; returns how many sends got through.
std::int64_t send_until_timeout(GroupCoordinator& group) {
  group.set_timeout(kShort);
  for (std::int64_t delivered = 0;; ++delivered) {
    try {
      group.send_tensor_dict(message(delivered), 1);
    } catch (const Error& e) {
      expect(e.code() == Errc::timeout, std::string("a timeout, got: ") + e.what());
      return delivered;
    }
  }
}

}  // namespace

TEST_CASE("p2p: after a send timeout and a receive timeout the next messages arrive in order") {
  for (const Transport* transport : transport_table()) {
    CAPTURE(std::string(transport->name()));
    RankWorld world({0, 1}, *transport, *transport, kLong);
    Signal send_failed, recv_failed;
    std::int64_t delivered = 0;  // messages the sender got into the channel before one timed out
    std::vector<std::int64_t> received;
    auto errors = world.run([&](int rank) {
      GroupCoordinator group(make_group_state(world.context(rank), GroupKind::world, 0, kPair));
      if (rank == 0) {
        delivered = send_until_timeout(group);  // nobody receives yet: the channel fills
        send_failed.raise();
        expect(recv_failed.wait(), "the receiver to time out");
        group.set_timeout(kLong);
        group.send_tensor_dict(message(1000), 1);  // "X"
        group.send_tensor_dict(message(1001), 1);  // "Y"
        return;
      }
      expect(send_failed.wait(), "a send to time out");
      for (std::int64_t i = 0; i < delivered; ++i) received.push_back(index_of(group.recv_tensor_dict(0)));
      group.set_timeout(kShort);
      try {
        group.recv_tensor_dict(0);
        expect(false, "the receive after the last delivered message to time out");
      } catch (const Error& e) {
        expect(e.code() == Errc::timeout, std::string("a timeout, got: ") + e.what());
      }
      recv_failed.raise();
      group.set_timeout(kLong);
      received.push_back(index_of(group.recv_tensor_dict(0)));
      received.push_back(index_of(group.recv_tensor_dict(0)));
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    REQUIRE(delivered > 0);
    REQUIRE(received.size() == static_cast<std::size_t>(delivered + 2));
    for (std::int64_t i = 0; i < delivered; ++i) CHECK(received[static_cast<std::size_t>(i)] == i);
    CHECK(received[static_cast<std::size_t>(delivered)] == 1000);
    CHECK(received[static_cast<std::size_t>(delivered) + 1] == 1001);
  }
}

TEST_CASE("p2p: the receive paired with a failed send reports it naming both sides and the next "
          "receive gets the next message") {
  for (const Transport* transport : transport_table()) {
    CAPTURE(std::string(transport->name()));
    RankWorld world({0, 1}, *transport, *transport, kLong);
    Signal send_failed;
    std::int64_t delivered = 0;
    std::string gap_error;
    std::vector<std::int64_t> received;
    auto errors = world.run([&](int rank) {
      GroupCoordinator group(make_group_state(world.context(rank), GroupKind::world, 0, kPair));
      if (rank == 0) {
        delivered = send_until_timeout(group);
        send_failed.raise();
        group.set_timeout(kLong);
        group.send_object(Value("X"), 1);
        return;
      }
      expect(send_failed.wait(), "a send to time out");
      for (std::int64_t i = 0; i < delivered; ++i) received.push_back(index_of(group.recv_tensor_dict(0)));
      // This receive is the failed send's partner: "X" came after it.
      try {
        group.recv_tensor_dict(0);
        gap_error = "(the receive returned a message)";
      } catch (const Error& e) {
        gap_error = std::string(to_string(e.code())) + ": " + e.what();
      }
      expect(group.recv_object(0) == Value("X"), "\"X\" on the next receive");
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    CHECK(received.size() == static_cast<std::size_t>(delivered));
    const std::string failed_number = "#" + std::to_string(delivered);
    CHECK_MESSAGE(gap_error.rfind("mismatch: ", 0) == 0, gap_error);
    CHECK_MESSAGE(gap_error.find("group rank 1 (rank 1)") != std::string::npos, gap_error);
    CHECK_MESSAGE(gap_error.find("from group rank 0 (rank 0), whose send " + failed_number + " failed") !=
                      std::string::npos,
                  gap_error);
  }
}

TEST_CASE("all_gather: a caller's input overwritten after a timeout never reaches a late peer") {
  // Over shm, all_gather lends its block of the result to the peers' channels; inproc, it loans
  // it to the peers themselves. Rank 0 gives up on rank 2, which comes late, overwrites its input
  // and calls all_gather again with it (as an engine retrying would). Rank 2 must fail, or return
  // rank 0's input as it was — never the bytes written after rank 0's all_gather failed.
  for (const Transport* transport : {&shm_transport(), &inproc_transport()}) {
    CAPTURE(std::string(transport->name()));
    RankWorld world({0, 0, 0}, *transport, *transport, kLong);
    constexpr std::int64_t kElements = 256 << 10;  // 1 MiB: lent (loaned), not copied
    constexpr auto kPatient = 2s;  // rank 1 waits for rank 2 this long, and no longer
    Signal overwritten;
    std::string late_outcome;
    auto errors = world.run([&](int rank) {
      GroupCoordinator group(make_group_state(world.context(rank), GroupKind::world, 0, Group{0, 1, 2}));
      Tensor input = Tensor::empty({kElements}, DType::f32);
      std::fill_n(input.data_as<float>(), kElements, static_cast<float>(rank + 1));
      if (rank == 0) {
        group.set_timeout(kShort);
        try {
          group.all_gather(input);
          expect(false, "all_gather without rank 2 to time out");
        } catch (const Error& e) {
          expect(e.code() == Errc::timeout, std::string("a timeout, got: ") + e.what());
        }
        std::fill_n(input.data_as<float>(), kElements, -1.0f);  // the caller reuses its buffer
        overwritten.raise();
        group.set_timeout(kPatient);
        try {
          group.all_gather(input);  // whether the retry succeeds is not the question here
        } catch (const Error&) {
        }
        return;
      }
      group.set_timeout(kPatient);
      if (rank == 2) expect(overwritten.wait(), "rank 0 to give up and overwrite its input");
      try {
        Tensor gathered = group.all_gather(input);
        if (rank == 2) {
          const float* first = gathered.data_as<float>();
          late_outcome = std::all_of(first, first + kElements, [](float x) { return x == 1.0f; })
                             ? "returned rank 0's input as it was sent"
                             : "returned bytes rank 0 wrote after its all_gather failed";
        }
      } catch (const Error& e) {
        if (rank == 2) late_outcome = std::string("failed: ") + to_string(e.code()) + ": " + e.what();
      }
      try {
        group.all_gather(input);  // rank 0's retry
      } catch (const Error&) {
      }
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    CHECK_MESSAGE(late_outcome.find("after its all_gather failed") == std::string::npos, late_outcome);
    MESSAGE(late_outcome);
  }
}

TEST_CASE("broadcast: a root's tensor overwritten after a timeout never reaches a late receiver") {
  // Inproc, broadcast loans the root's tensor to the receivers themselves (behind a LoanGate). Rank 0 gives up on rank 2, which comes late, and overwrites its tensor. Rank 2 must
  // fail, or fill its tensor with rank 0's as it was — never the bytes written after rank 0's
  // broadcast failed. Inproc it fails: the loan it finds was withdrawn.
  for (const Transport* transport : {&inproc_transport(), &shm_transport(), &tcp_transport()}) {
    const std::string name(transport->name());
    CAPTURE(name);
    RankWorld world({0, 0, 0}, *transport, *transport, kLong);
    constexpr std::int64_t kElements = 256 << 10;  // 1 MiB: loaned or lent, not copied
    Signal overwritten;
    std::string late_outcome;
    auto errors = world.run([&](int rank) {
      GroupCoordinator group(make_group_state(world.context(rank), GroupKind::world, 0, Group{0, 1, 2}));
      Tensor tensor = Tensor::empty({kElements}, DType::f32);
      std::fill_n(tensor.data_as<float>(), kElements, rank == 0 ? 1.0f : 0.0f);
      if (rank == 0) {
        group.set_timeout(kShort);
        try {
          // Returns where its channels copied the tensor while it left (shm's two readers get
          // one copy; tcp's writers copy what the socket does not take at once); inproc, times
          // out waiting for rank 2 to take its loan.
          group.broadcast(tensor, 0);
          expect(name != "inproc", "broadcast without rank 2 to time out");
        } catch (const Error& e) {
          expect(e.code() == Errc::timeout, std::string("a timeout, got: ") + e.what());
        }
        std::fill_n(tensor.data_as<float>(), kElements, -1.0f);  // the caller reuses its buffer
        overwritten.raise();
        group.set_timeout(kLong);
        group.broadcast(tensor, 0);  // the group goes on: the next broadcast reaches everyone
        return;
      }
      group.set_timeout(kLong);
      if (rank == 2) expect(overwritten.wait(), "rank 0 to give up and overwrite its tensor");
      try {
        group.broadcast(tensor, 0);
        if (rank == 2) {
          const float* first = tensor.data_as<float>();
          late_outcome = std::all_of(first, first + kElements, [](float x) { return x == 1.0f; })
                             ? "filled with rank 0's tensor as it was sent"
                             : "filled with bytes rank 0 wrote after its broadcast failed";
        }
      } catch (const Error& e) {
        if (rank == 2) late_outcome = std::string("failed: ") + to_string(e.code()) + ": " + e.what();
      }
      group.broadcast(tensor, 0);
      const float* first = tensor.data_as<float>();
      expect(std::all_of(first, first + kElements, [](float x) { return x == -1.0f; }),
             "the next broadcast to fill the tensor with rank 0's new bytes");
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    CHECK_MESSAGE(late_outcome.find("after its broadcast failed") == std::string::npos, late_outcome);
    if (name == "inproc") {
      CHECK_MESSAGE(late_outcome.find("failed: peer failed") == 0, late_outcome);
      CHECK_MESSAGE(late_outcome.find("withdrew the memory it lent") != std::string::npos, late_outcome);
    }
    MESSAGE(late_outcome);
  }
}

TEST_CASE("all_reduce: a caller's input overwritten after a timeout never reaches a late peer") {
  // Over tcp, all_reduce lends pieces of the caller's input to the peers' channels (over shm,
  // pooled copies of them). Rank 0 gives up on rank 2, which comes late; rank 0 then overwrites
  // its input. Rank 2 must fail, or sum rank 0's input as it was — never the bytes written after
  // rank 0's all_reduce failed.
  for (bool shm : {true, false}) {
    CAPTURE(shm);
    const Transport& transport = shm ? shm_transport() : tcp_transport();
    RankWorld world({0, 0, 0}, transport, transport, kLong);
    constexpr std::int64_t kElements = 3 << 20;  // 12 MiB: over tcp, chunks of several pieces
    constexpr auto kPatient = 2s;
    Signal overwritten;
    std::string late_outcome;
    auto errors = world.run([&](int rank) {
      GroupCoordinator group(make_group_state(world.context(rank), GroupKind::world, 0, Group{0, 1, 2}));
      Tensor input = Tensor::empty({kElements}, DType::f32);
      std::fill_n(input.data_as<float>(), kElements, 1.0f);
      if (rank == 0) {
        group.set_timeout(kShort);
        try {
          group.all_reduce(input);
          expect(false, "all_reduce without rank 2 to time out");
        } catch (const Error& e) {
          expect(e.code() == Errc::timeout, std::string("a timeout, got: ") + e.what());
        }
        std::fill_n(input.data_as<float>(), kElements, 1000.0f);  // the caller reuses its buffer
        overwritten.raise();
        return;
      }
      group.set_timeout(kPatient);
      if (rank == 2) expect(overwritten.wait(), "rank 0 to give up and overwrite its input");
      try {
        Tensor sum = group.all_reduce(input);
        if (rank == 2) {
          const float* first = sum.data_as<float>();
          late_outcome = std::all_of(first, first + kElements, [](float x) { return x == 3.0f; })
                             ? "returned the sum of the inputs as they were sent"
                             : "returned a sum of bytes rank 0 wrote after its all_reduce failed";
        }
      } catch (const Error& e) {
        if (rank == 2) late_outcome = std::string("failed: ") + to_string(e.code()) + ": " + e.what();
      }
    });
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    CHECK_MESSAGE(late_outcome.find("after its all_reduce failed") == std::string::npos, late_outcome);
    MESSAGE(late_outcome);
  }
}

TEST_CASE("all_reduce: a peer lost in the middle fails the others at once, over shm and tcp") {
  // After a first all_reduce, ranks 0 and 2 are inside a second one of 12 MiB, waiting for
  // rank 1, when rank 2's rank fails (as when its process dies); rank 1 comes after that. Ranks 0 and 1 must fail with
  // peer_failed long before their timeout, never hang or return a result.
  for (bool shm : {true, false}) {
    CAPTURE(shm);
    const Transport& transport = shm ? shm_transport() : tcp_transport();
    RankWorld world({0, 0, 0}, transport, transport, kLong);
    constexpr std::int64_t kElements = 3 << 20;
    std::vector<std::string> outcome(3);
    const auto start = std::chrono::steady_clock::now();
    auto errors = world.run([&](int rank) {
      GroupCoordinator group(make_group_state(world.context(rank), GroupKind::world, 0, Group{0, 1, 2}));
      Tensor input = Tensor::empty({kElements}, DType::f32);
      std::fill_n(input.data_as<float>(), kElements, 1.0f);
      group.all_reduce(input);  // every pair's channels are made
      std::thread killer;
      if (rank == 2)
        killer = std::thread([&] {
          std::this_thread::sleep_for(150ms);
          world.context(2)->fail("rank 2 was killed");
        });
      if (rank == 1) std::this_thread::sleep_for(300ms);
      try {
        group.all_reduce(input);
        outcome[static_cast<std::size_t>(rank)] = "returned a result";
      } catch (const Error& e) {
        outcome[static_cast<std::size_t>(rank)] = to_string(e.code()) + std::string(": ") + e.what();
      }
      if (killer.joinable()) killer.join();
    });
    const auto took = std::chrono::steady_clock::now() - start;
    REQUIRE_MESSAGE(all_ok(errors), joined(errors));
    for (int rank : {0, 1})
      CHECK_MESSAGE(outcome[static_cast<std::size_t>(rank)].rfind(to_string(Errc::peer_failed) + std::string(":"), 0) == 0,
                    "rank " << rank << ": " << outcome[static_cast<std::size_t>(rank)]);
    CHECK(took < kLong / 2);
  }
}
