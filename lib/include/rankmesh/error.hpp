// Errors: every failure rankmesh reports is an Error — a code to branch on and a message that
// says the rest (naming both sides: which rank, which group, which operation, what each side
// had). The codes and their numbers are listed, with when each is thrown, in docs/errors.md.
#pragma once

#include <stdexcept>
#include <string>

namespace rankmesh {

// What went wrong, coarse enough to branch on. The numeric values are stable: they never change
// and are never reused (bindings and logs may keep them); a new code takes the next number.
enum class Errc : int {
  // The caller passed something impossible: sizes, shapes, dtypes, ranks, keys, dims, counts;
  // a second initialize_model_parallel without destroy_model_parallel.
  invalid_argument = 0,
  // A parallel configuration or placement that cannot be laid out, launcher variables or
  // runtime options that contradict each other, a secret file others may read.
  invalid_config = 1,
  // Bytes from outside (a peer's metadata or frames, a handshake, a file) that do not decode.
  malformed = 2,
  // Well-formed input beyond a configured limit (tensor bytes, metadata size, dict entries,
  // nesting depth, frame payload).
  limit_exceeded = 3,
  // Something did not happen within the time the caller allowed: an operation whose peers did
  // not arrive, a wait on a handle, event or stream, a world that did not form.
  timeout = 4,
  // Work that was dropped before it ran: its stream was destroyed while the work waited.
  cancelled = 5,
  // Ranks disagree: a different operation, order, shape or dtype on the other side, a different
  // initialize_model_parallel, a wrong secret or world size in the handshake.
  mismatch = 6,
  // A group call before initialize_model_parallel, or after destroy_model_parallel.
  not_initialized = 7,
  // A peer died, froze, closed its connection, or the world was aborted (Runtime::abort); every
  // later operation that involves it fails the same way.
  peer_failed = 8,
  // The device (a GPU) refused or failed an operation: no device, out of device memory, a
  // kernel fault, an operation a CUDA graph capture cannot record.
  device = 9,
};

// The code's name in words ("invalid argument", "peer failed", ...).
const char* to_string(Errc code) noexcept;

class Error : public std::runtime_error {
public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Errc code() const noexcept { return code_; }

private:
  Errc code_;
};

}  // namespace rankmesh
