#include "rankmesh/error.hpp"

namespace rankmesh {

const char* to_string(Errc code) noexcept {
  switch (code) {
    case Errc::invalid_argument: return "invalid argument";
    case Errc::invalid_config: return "invalid configuration";
    case Errc::malformed: return "malformed input";
    case Errc::limit_exceeded: return "limit exceeded";
    case Errc::mismatch: return "mismatch";
    case Errc::not_initialized: return "not initialized";
    case Errc::peer_failed: return "peer failed";
    case Errc::device: return "device error";
    case Errc::timeout: return "timeout";
    case Errc::cancelled: return "cancelled";
  }
  return "unknown error";
}

}  // namespace rankmesh
