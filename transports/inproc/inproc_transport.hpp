// The inproc transport: ranks that are threads of one process, joined by InprocChannels that
// hand tensors over by reference.
#pragma once

#include "transport.hpp"

namespace rankmesh {

const Transport& inproc_transport();

}  // namespace rankmesh
