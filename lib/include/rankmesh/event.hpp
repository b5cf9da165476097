// Event: a point in a stream's work (or a condition a user signals) that completes once.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "rankmesh/device.hpp"

namespace rankmesh {

class Stream;

// Completes exactly once, successfully or with an error. Always shared (Event::create,
// Event::user), because streams, tensors and callbacks hold on to it. Thread-safe.
//
// A created event completes when the work enqueued on its stream before Stream::record has
// finished; a user event completes when someone calls complete() or fail(). Work behind an event
// that failed is skipped, and the failure travels on to the events recorded after it.
class Event : public std::enable_shared_from_this<Event> {
  struct Private {};

public:
  // An event to be recorded on a stream (once). Until it is recorded it is not complete.
  static std::shared_ptr<Event> create();
  // An event completed by complete() or fail(), for engines and tests.
  static std::shared_ptr<Event> user();

  Event(Private, bool user);
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // True once complete (successfully or not); never blocks.
  bool query() const noexcept;
  // Null unless the event completed with an error.
  std::exception_ptr error() const;
  // Blocks until complete or `timeout` passes; true when complete.
  bool wait_for(std::chrono::nanoseconds timeout) const;
  // Blocks until complete; throws Error(timeout) naming the event when `timeout` passes first,
  // and rethrows the event's error when it failed.
  void synchronize(std::chrono::nanoseconds timeout) const;

  // Runs `callback` once the event completes: on the completing thread, or right now on this
  // thread when it already has. Callbacks run in registration order, must be short, must not
  // block and must not throw (a throwing callback terminates the program): hand the news to
  // an actor or a queue instead of blocking on it.
  void on_complete(std::function<void()> callback) const;

  // Completes a user event (a second call does nothing); Error(invalid_argument) otherwise.
  void complete();
  // Completes a user event with an error; Error(invalid_argument) on a stream's event.
  void fail(std::exception_ptr error);

  bool is_user() const noexcept { return user_; }
  // The device stream's own event behind this one (a cudaEvent_t for a CUDA stream), set by the
  // stream that recorded it; null for host streams and user events. Lets another stream of that
  // device wait on the device itself instead of on the host-side completion.
  void* native_handle() const noexcept { return native_.get(); }
  // "user event", "event recorded on cpu:0 stream 3", "event not yet recorded".
  std::string describe() const;

private:
  friend class Stream;  // streams bind and finish their events through Stream's helpers
  void bind(Device device, std::uint64_t stream_id);
  void finish(std::exception_ptr error);

  const bool user_;
  mutable std::mutex mutex_;
  mutable std::condition_variable done_cv_;
  std::atomic<bool> done_{false};  // set under mutex_; read without it by query()
  bool recorded_ = false;
  Device device_;
  std::uint64_t stream_id_ = 0;
  std::shared_ptr<void> native_;  // set once, by the recording stream, before it can be read
  std::exception_ptr error_;
  mutable std::vector<std::function<void()>> callbacks_;  // observers register on const events
};

}  // namespace rankmesh
