// Either a value or an Error, for paths where bad input is expected (the decoders of peers'
// bytes): refusing input is an answer there, not an exception. Internal: engines see Error only.
#pragma once

#include <utility>
#include <variant>

#include "rankmesh/error.hpp"

namespace rankmesh {

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
