#include "environment.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <fstream>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

const char* get(const char* name) {
  const char* value = std::getenv(name);
  return value && *value ? value : nullptr;
}

int integer(const char* name, int min) {
  const char* text = get(name);
  if (!text) throw Error(Errc::invalid_argument, std::string(name) + " is not set");
  int value = 0;
  const char* end = text + std::char_traits<char>::length(text);
  auto [ptr, ec] = std::from_chars(text, end, value);
  if (ec != std::errc() || ptr != end || value < min)
    throw Error(Errc::invalid_argument, std::string(name) + "='" + text + "' is not an integer >= " +
                                            std::to_string(min));
  return value;
}

// Variable names of one launcher: rank, size, local rank, local size.
struct Scheme {
  const char* source;
  const char* rank;
  const char* size;
  const char* local_rank;
  const char* local_size;
};

constexpr Scheme kSchemes[] = {
    {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
    {"OpenMPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"},
    {"Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"},
};

}  // namespace

std::optional<ProcessPlace> process_place_from_environment() {
  for (const Scheme& scheme : kSchemes) {
    if (!get(scheme.rank)) continue;
    ProcessPlace place;
    place.source = scheme.source;
    place.world_size = integer(scheme.size, 1);
    place.rank = integer(scheme.rank, 0);
    if (place.rank >= place.world_size)
      throw Error(Errc::invalid_argument, std::string(scheme.rank) + "=" + std::to_string(place.rank) +
                                              " is outside " + scheme.size + "=" +
                                              std::to_string(place.world_size));
    place.local_rank = get(scheme.local_rank) ? integer(scheme.local_rank, 0) : place.rank;
    place.local_world_size = get(scheme.local_size) ? integer(scheme.local_size, 1) : place.world_size;
    const char* addr = get("MASTER_ADDR");
    if (!addr)
      throw Error(Errc::invalid_argument, std::string(scheme.source) +
                                              " variables are set but MASTER_ADDR is not (the "
                                              "address where rank 0 hosts the registry)");
    place.master_addr = addr;
    place.master_port = integer("MASTER_PORT", 1);
    if (place.master_port > 65535)
      throw Error(Errc::invalid_argument, "MASTER_PORT=" + std::to_string(place.master_port) +
                                              " is not a port");
    // Only rank 0 hosts the registry; a descriptor 0-2 would be a standard stream.
    if (place.rank == 0 && get("RANKMESH_REGISTRY_FD"))
      place.registry_fd = integer("RANKMESH_REGISTRY_FD", 3);
    return place;
  }
  return std::nullopt;
}

std::string node_identity() {
  if (const char* id = get("RANKMESH_NODE_ID")) return id;
  std::string boot;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> boot;
  // Shared memory needs more than the network: the peer's /proc/<pid>/fd (shm_segment.hpp)
  // must be reachable, so the pid namespace counts, and the IPC namespace with it.
  std::string id = boot;
  for (const char* ns : {"net", "pid", "ipc"}) {
    struct stat st {};
    if (stat(("/proc/self/ns/" + std::string(ns)).c_str(), &st) != 0) st.st_ino = 0;
    id += "/" + std::string(ns) + "ns:" + std::to_string(st.st_ino);
  }
  return id;
}

std::string local_address_toward(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), "9", &hints, &found) != 0 || !found)
    throw Error(Errc::invalid_argument, "cannot resolve MASTER_ADDR '" + host + "'");
  std::string address;
  // Connecting a UDP socket sends nothing; it only asks the kernel which route (and so which
  // local address) leads to the host.
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    sockaddr_in local{};
    socklen_t size = sizeof local;
    char text[INET_ADDRSTRLEN] = {};
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &size) == 0 &&
        inet_ntop(AF_INET, &local.sin_addr, text, sizeof text))
      address = text;
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(found);
  if (address.empty())
    throw Error(Errc::invalid_argument, "no local interface reaches MASTER_ADDR '" + host + "'");
  return address;
}

}  // namespace rankmesh
