// The shm transport: ranks of one node, each direction a shared-memory ring (shm_channel.hpp).
// Each rank makes the segments it receives through and publishes their names through the
// Exchange; its peers open them as senders.
#pragma once

#include "transport.hpp"

namespace rankmesh {

const Transport& shm_transport();

}  // namespace rankmesh
