// Errors are values with a message a user can act on.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace rankmesh {

// What went wrong, coarse enough to branch on; the message says the rest.
enum class Errc {
  invalid_argument,  // a caller passed something impossible (sizes, ranks, keys)
  invalid_config,    // a parallel configuration or placement that cannot be laid out
  malformed,         // bytes from outside (metadata, frames, files) that do not decode
  limit_exceeded,    // well-formed input beyond a configured limit
  timeout,           // something did not happen within the time the caller allowed
  cancelled,         // work that was dropped before it ran (its stream went away)
  mismatch,          // ranks disagree: different operations, order or configuration
  not_initialized,   // a group call before initialize_model_parallel (or after destroy)
  peer_failed,       // a peer died, froze or the world was aborted
};

const char* to_string(Errc code) noexcept;

class Error : public std::runtime_error {
public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Errc code() const noexcept { return code_; }

private:
  Errc code_;
};

// Either a value or an Error, for paths where bad input is expected (decoders).
template <class T>
class Result {
public:
  Result(T value) : state_(std::move(value)) {}
  Result(Error error) : state_(std::move(error)) {}

  bool ok() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  // The value; throws the Error when there is none.
  T& value() & {
    if (!ok()) throw std::get<1>(state_);
    return std::get<0>(state_);
  }
  const T& value() const& {
    if (!ok()) throw std::get<1>(state_);
    return std::get<0>(state_);
  }
  T&& value() && {
    if (!ok()) throw std::get<1>(state_);
    return std::get<0>(std::move(state_));
  }
  const Error& error() const { return std::get<1>(state_); }

private:
  std::variant<T, Error> state_;
};

}  // namespace rankmesh
