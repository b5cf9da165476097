// Handles of asynchronous operations: wait (with a timeout) or poll; several may be in flight.
// The rules every operation follows: docs/semantics.md.
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace rankmesh {

namespace detail {

// Completion state shared by an operation and its handle. Waiting blocks on a condition
// variable (asynchronous completions are not on the per-message path).
class Completion {
public:
  Completion();
  ~Completion();
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;

  bool done() const noexcept;
  // Waits until done; throws Error(timeout) naming `what` after `timeout`.
  void wait(std::chrono::nanoseconds timeout, const char* what) const;
  void finish(std::exception_ptr error) noexcept;  // error may be null
  void rethrow_if_failed() const;

private:
  struct State;
  std::unique_ptr<State> state_;
};

template <class T>
struct Op : Completion {
  std::optional<T> value;
};

template <>
struct Op<void> : Completion {};

}  // namespace detail

template <class T>
class Handle {
public:
  Handle() = default;
  explicit Handle(std::shared_ptr<detail::Op<T>> op) : op_(std::move(op)) {}

  bool valid() const noexcept { return op_ != nullptr; }
  // True once the operation has finished, successfully or not.
  bool poll() const noexcept { return op_->done(); }
  // The result; rethrows the operation's error. Throws Error(timeout) after `timeout`.
  T wait(std::chrono::nanoseconds timeout) {
    op_->wait(timeout, "an asynchronous operation");
    op_->rethrow_if_failed();
    if constexpr (!std::is_void_v<T>) return std::move(*op_->value);
  }

private:
  std::shared_ptr<detail::Op<T>> op_;
};

}  // namespace rankmesh
