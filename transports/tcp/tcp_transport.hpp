// The tcp transport: any two ranks, one authenticated connection per pair carrying both
// directions (tcp_link.hpp, tcp_listener.hpp). Each rank listens from the moment its endpoint opens, and
// publishes its address through the Exchange; the higher rank of a pair dials the lower.
#pragma once

#include "transport.hpp"

namespace rankmesh {

const Transport& tcp_transport();

}  // namespace rankmesh
