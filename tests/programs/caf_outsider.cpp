// rankmesh-caf-outsider HOST PORT: a local process without the secret that speaks CAF's own
// protocol to a registry port, as a peer could when the registry was a published CAF actor.
// Connected, it sends what would end or steer a world there: a bogus join, beats and leaves for
// invented ranks, an exchange value, and an exit message. Prints "refused: WHY" (exit 0) when
// the port does not let it in, "sent: ..." (exit 3) when it got through.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

using join_atom = caf::atom_constant<caf::atom("join")>;
using beat_atom = caf::atom_constant<caf::atom("beat")>;
using leave_atom = caf::atom_constant<caf::atom("leave")>;
using exchange_atom = caf::atom_constant<caf::atom("exchange")>;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: rankmesh-caf-outsider HOST PORT\n");
    return 2;
  }
  caf::actor_system_config cfg;
  cfg.set("logger.console", caf::atom("none"));
  cfg.load<caf::io::middleman>();
  caf::actor_system system{cfg};
  auto registry = system.middleman().remote_actor(argv[1], static_cast<std::uint16_t>(std::atoi(argv[2])));
  if (!registry) {
    std::printf("refused: %s\n", system.render(registry.error()).c_str());
    return 0;
  }
  caf::scoped_actor self{system};
  const std::string no_proof(64, '0');
  self->send(*registry, join_atom::value, 1, 2, std::string("node"), std::string("127.0.0.1:1"),
             caf::actor_cast<caf::actor>(self), no_proof);
  for (int rank : {5, 6, 7}) self->send(*registry, beat_atom::value, rank);
  for (int rank : {5, 6, 7}) self->send(*registry, leave_atom::value, rank);
  self->send(*registry, exchange_atom::value, std::string("shm segments"), 1, std::string("1=/evil;"));
  self->send_exit(*registry, caf::exit_reason::kill);
  std::printf("sent: a join, beats and leaves for ranks 5-7, an exchange, an exit message\n");
  return 3;
}
