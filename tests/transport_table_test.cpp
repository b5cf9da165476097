// The transport table and the data plane's choice per peer: the nearest transport that reaches
// the peer, or the one a run forces; every rank must force the same.
#include <doctest/doctest.h>

#include <chrono>
#include <exception>
#include <string>
#include <thread>

#include "data_plane.hpp"
#include "local_exchange.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/runtime.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> names(const std::vector<const Transport*>& transports) {
  std::vector<std::string> out;
  for (const Transport* transport : transports) out.emplace_back(transport->name());
  return out;
}

}  // namespace

TEST_CASE("transport table: inproc, shm, tcp, nearest first") {
  CHECK(transport_choices(transport_table()) == "auto, inproc, shm, tcp");
  CHECK(find_transport(transport_table(), "shm")->reach() == Reach::same_node);
  CHECK(find_transport(transport_table(), "carrier pigeon") == nullptr);
  // A rank opens only what it may need: the forced one, or the table up to the first that
  // reaches every peer.
  using Names = std::vector<std::string>;
  CHECK(names(candidate_transports(transport_table(), "auto", Reach::any)) == Names{"inproc", "shm", "tcp"});
  CHECK(names(candidate_transports(transport_table(), "auto", Reach::same_process)) == Names{"inproc"});
  CHECK(names(candidate_transports(transport_table(), "tcp", Reach::same_process)) == Names{"tcp"});
  try {
    candidate_transports(transport_table(), "udp", Reach::any);
    FAIL("an unknown transport was accepted");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::invalid_argument);
    CHECK(std::string(e.what()) == "transport 'udp' is none of auto, inproc, shm, tcp");
  }
}

TEST_CASE("transport table: each peer gets the nearest transport that reaches it") {
  const std::vector<RankPlace> places = {{"node a", "process 0"}, {"node a", "process 0"},
                                         {"node a", "process 2"}, {"node b", "process 3"}};
  const auto all = candidate_transports(transport_table(), "auto", Reach::any);
  CHECK(transport_between(all, 0, 1, places).name() == "inproc");
  CHECK(transport_between(all, 0, 2, places).name() == "shm");
  CHECK(transport_between(all, 0, 3, places).name() == "tcp");
  CHECK(transport_between(all, 3, 0, places).name() == "tcp");  // the same either way
  const auto shm_only = candidate_transports(transport_table(), "shm", Reach::any);
  CHECK(transport_between(shm_only, 0, 1, places).name() == "shm");
  try {
    transport_between(shm_only, 0, 3, places);
    FAIL("shm reached another node");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::invalid_config);
    CHECK(std::string(e.what()).find("rank 0: no transport (shm) reaches rank 3 on another node (node b)") !=
          std::string::npos);
    CHECK(std::string(e.what()).find("RANKMESH_TRANSPORT=shm") != std::string::npos);
  }
}

TEST_CASE("data plane: ranks that force different transports are told so, by name") {
  LocalExchange exchange(2);
  const std::vector<RankPlace> places(2, RankPlace{"this node", "this process"});
  auto context = [](int rank) {
    TransportContext context;
    context.rank = rank;
    context.world_size = 2;
    context.secret = "data plane test";
    context.log = [](const std::string&) {};
    return context;
  };
  DataPlane zero(context(0), "shm", Reach::same_process);
  DataPlane one(context(1), "tcp", Reach::same_process);
  CHECK(zero.address().empty());
  CHECK(one.address().rfind("127.0.0.1:", 0) == 0);  // tcp listens from the start
  std::string other_error;
  std::thread other([&] {
    try {
      one.connect(places, exchange.rank(1), deadline_after(10s));
    } catch (const Error& e) {
      other_error = e.what();
    }
  });
  try {
    zero.connect(places, exchange.rank(0), deadline_after(10s));
    FAIL("ranks with different transports connected");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::invalid_config);
    CHECK(std::string(e.what()) ==
          "rank 0 runs with RANKMESH_TRANSPORT=shm, rank 1 with tcp: every rank must use the same");
  }
  other.join();
  CHECK(other_error == "rank 1 runs with RANKMESH_TRANSPORT=tcp, rank 0 with shm: every rank must use the same");
}

TEST_CASE("data plane: each peer's channels come from its transport, shm peers share memory") {
  LocalExchange exchange(3);
  // Ranks 0 and 1 share a process; rank 2 is another process of their node.
  const std::vector<RankPlace> places = {{"node", "p"}, {"node", "p"}, {"node", "q"}};
  std::vector<std::unique_ptr<DataPlane>> planes;
  for (int rank = 0; rank < 3; ++rank) {
    TransportContext context;
    context.rank = rank;
    context.world_size = 3;
    context.secret = "data plane test";
    context.log = [](const std::string&) {};
    planes.push_back(std::make_unique<DataPlane>(context, "auto", Reach::any));
  }
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 3; ++rank)
    threads.emplace_back([&, rank] {
      planes[static_cast<std::size_t>(rank)]->connect(places, exchange.rank(rank), deadline_after(10s));
    });
  for (auto& thread : threads) thread.join();
  const DataPlane& zero = *planes[0];
  CHECK(zero.outbound()[0] == nullptr);
  CHECK(zero.outbound()[1]->traits().shares_tensors);   // inproc
  CHECK(!zero.outbound()[2]->traits().shares_tensors);  // shm
  CHECK(zero.inbound()[2]->traits().lands_payloads);
  CHECK(zero.shared_memory() == std::vector<bool>{false, false, true});
  CHECK(zero.same_node() == std::vector<bool>{true, true, true});
  Frame frame;
  frame.metadata = {4, 2};
  zero.outbound()[2]->send(frame, deadline_after(5s));
  Frame got;
  REQUIRE(planes[2]->inbound()[0]->recv(got, deadline_after(5s)));
  CHECK(got.metadata == std::vector<std::uint8_t>{4, 2});
}

TEST_CASE("runtime: an embedded world takes a transport by name, and refuses an unknown one") {
  RuntimeOptions options;
  options.world_size = 2;
  options.transport = "carrier pigeon";
  options.log = [](const std::string&) {};
  try {
    Runtime runtime(options);
    FAIL("an unknown transport was accepted");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::invalid_argument);
    CHECK(std::string(e.what()) == "transport 'carrier pigeon' is none of auto, inproc, shm, tcp");
  }
  for (const char* transport : {"inproc", "shm", "tcp"}) {
    CAPTURE(transport);
    options.transport = transport;
    Runtime runtime(options);
    CHECK(runtime.world_size() == 2);
  }
}
