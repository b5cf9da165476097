// LoanGate: a claim either comes before a revocation, which then waits for its release, or
// fails; and the inproc channel carries a frame's gate to its receiver, and no other frame's.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "inproc/inproc_channel.hpp"
#include "loan_gate.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

TEST_CASE("loan gate: claims succeed until it is revoked, and fail after") {
  LoanGate gate;
  REQUIRE(gate.claim());
  gate.release();
  REQUIRE(gate.claim());  // claims may overlap (several receivers)
  REQUIRE(gate.claim());
  gate.release();
  gate.release();
  gate.revoke();  // nothing held: returns at once
  CHECK_FALSE(gate.claim());
  CHECK_FALSE(gate.claim());  // a failed claim holds nothing
  gate.revoke();              // nor does it keep a second revocation waiting
}

TEST_CASE("loan gate: revoking waits for the claim held, and no claim succeeds meanwhile") {
  LoanGate gate;
  REQUIRE(gate.claim());
  std::atomic<bool> revoked{false};
  std::thread sender([&] {
    gate.revoke();
    revoked.store(true);
  });
  // Once revoking has begun, nobody new gets in (a claim made before it only adds a holder).
  bool refused = false;
  for (auto until = std::chrono::steady_clock::now() + 5s;
       !refused && std::chrono::steady_clock::now() < until;) {
    if (gate.claim()) {
      gate.release();
      std::this_thread::yield();
    } else {
      refused = true;
    }
  }
  CHECK(refused);
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(revoked.load());  // the first holder is still reading
  gate.release();
  sender.join();
  CHECK(revoked.load());
}

TEST_CASE("inproc: a frame's loan reaches its receiver, and a frame sent without one carries none") {
  InprocChannel channel;
  Frame sent;
  auto gate = std::make_shared<LoanGate>();
  sent.loan = gate;
  channel.send(sent, deadline_after(1s));
  CHECK_FALSE(sent.loan);  // the sender's frame lets go of it
  Frame received;
  REQUIRE(channel.recv(received, deadline_after(1s)));
  CHECK(received.loan == gate);
  channel.send(sent, deadline_after(1s));  // no loan this time
  REQUIRE(channel.recv(received, deadline_after(1s)));
  CHECK_FALSE(received.loan);
}
