#include "rankmesh/event.hpp"

#include <algorithm>
#include <utility>

#include "rankmesh/error.hpp"

#include "duration_text.hpp"

namespace rankmesh {

namespace {

// A callback that throws has no one to report to (it runs on whichever thread completed the
// event), so it ends the program rather than vanish.
void run_callback(const std::function<void()>& callback) noexcept { callback(); }

}  // namespace

std::shared_ptr<Event> Event::create() { return std::make_shared<Event>(Private{}, false); }
std::shared_ptr<Event> Event::user() { return std::make_shared<Event>(Private{}, true); }

Event::Event(Private, bool user) : user_(user) {}

bool Event::query() const noexcept { return done_.load(std::memory_order_acquire); }

std::exception_ptr Event::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

bool Event::wait_for(std::chrono::nanoseconds timeout) const {
  if (query()) return true;
  // condition_variable adds the timeout to now(); clamp so "forever" does not overflow.
  timeout = std::min(timeout, std::chrono::nanoseconds(std::chrono::hours(24 * 365)));
  std::unique_lock lock(mutex_);
  return done_cv_.wait_for(lock, timeout, [&] { return done_.load(std::memory_order_relaxed); });
}

void Event::synchronize(std::chrono::nanoseconds timeout) const {
  if (!wait_for(timeout)) {
    throw Error(Errc::timeout, describe() + " did not complete within " + detail::duration_text(timeout));
  }
  if (auto error = this->error()) std::rethrow_exception(error);
}

void Event::on_complete(std::function<void()> callback) const {
  {
    std::lock_guard lock(mutex_);
    if (!done_.load(std::memory_order_relaxed)) {
      callbacks_.push_back(std::move(callback));
      return;
    }
  }
  run_callback(callback);
}

void Event::complete() {
  if (!user_) {
    throw Error(Errc::invalid_argument,
                "complete() on " + describe() + ": only user events are completed by hand");
  }
  finish(nullptr);
}

void Event::fail(std::exception_ptr error) {
  if (!user_) {
    throw Error(Errc::invalid_argument,
                "fail() on " + describe() + ": only user events are completed by hand");
  }
  if (!error) throw Error(Errc::invalid_argument, "fail() needs an error");
  finish(std::move(error));
}

std::string Event::describe() const {
  if (user_) return "user event";
  std::lock_guard lock(mutex_);
  if (!recorded_) return "event not yet recorded";
  return "event recorded on " + to_string(device_) + " stream " + std::to_string(stream_id_);
}

void Event::bind(Device device, std::uint64_t stream_id) {
  if (user_) {
    throw Error(Errc::invalid_argument,
                "a user event cannot be recorded on a stream; it completes by complete()");
  }
  std::lock_guard lock(mutex_);
  if (recorded_) {
    throw Error(Errc::invalid_argument,
                "event already recorded on " + to_string(device_) + " stream " +
                    std::to_string(stream_id_) + "; an event is recorded once, create a new one");
  }
  recorded_ = true;
  device_ = device;
  stream_id_ = stream_id;
}

void Event::finish(std::exception_ptr error) {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mutex_);
    if (done_.load(std::memory_order_relaxed)) return;
    error_ = std::move(error);
    done_.store(true, std::memory_order_release);
    callbacks.swap(callbacks_);
    // Notify under the lock, so a waiter cannot return and free the event before the notify.
    done_cv_.notify_all();
  }
  for (const auto& callback : callbacks) run_callback(callback);
}

}  // namespace rankmesh
