// Where a process learns its place in a multi-process world: torchrun's variables (set by
// `rankmesh launch`), OpenMPI's or Slurm's, and its node identity.
#pragma once

#include <optional>
#include <string>

namespace rankmesh {

struct ProcessPlace {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr;
  int master_port = 0;
  // Rank 0: RANKMESH_REGISTRY_FD, the registry's socket that rankmesh launch bound to
  // MASTER_PORT and handed over (no other process can take the port in between); -1: none.
  int registry_fd = -1;
  std::string source;  // which launcher's variables: "torchrun", "OpenMPI", "Slurm"
};

// The place from the environment, or nullopt when no launcher set one (the embedded default:
// every rank in this process). Throws Error(invalid_argument) naming a variable that is set but
// wrong, or missing MASTER_ADDR/MASTER_PORT.
std::optional<ProcessPlace> process_place_from_environment();

// RANKMESH_NODE_ID if set, else the boot id plus the network-, pid- and IPC-namespace inodes,
// so that ranks in two such namespaces of one machine count as two nodes (and talk over tcp).
std::string node_identity();

// The address of this host's interface that reaches `host` (127.0.0.1 for a loopback or local
// master): where the data plane listens by default, never all interfaces.
std::string local_address_toward(const std::string& host);

}  // namespace rankmesh
