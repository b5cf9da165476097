#include "rankmesh/handle.hpp"

#include <condition_variable>
#include <mutex>
#include <string>

#include "rankmesh/error.hpp"

namespace rankmesh::detail {

// Asynchronous completions are not on the per-message path (blocking calls are), so a mutex
// and a condition variable are enough here.
struct Completion::State {
  mutable std::mutex mutex;
  mutable std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;
};

Completion::Completion() : state_(std::make_unique<State>()) {}
Completion::~Completion() = default;

bool Completion::done() const noexcept {
  std::lock_guard lock(state_->mutex);
  return state_->done;
}

void Completion::wait(std::chrono::nanoseconds timeout, const char* what) const {
  std::unique_lock lock(state_->mutex);
  if (!state_->cv.wait_for(lock, timeout, [&] { return state_->done; }))
    throw Error(Errc::timeout, std::string(what) + " did not finish within " +
                                   std::to_string(timeout.count() / 1'000'000) + " ms");
}

void Completion::finish(std::exception_ptr error) noexcept {
  {
    std::lock_guard lock(state_->mutex);
    state_->error = std::move(error);
    state_->done = true;
  }
  state_->cv.notify_all();
}

void Completion::rethrow_if_failed() const {
  std::lock_guard lock(state_->mutex);
  if (state_->error) std::rethrow_exception(state_->error);
}

}  // namespace rankmesh::detail
