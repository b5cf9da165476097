// Stream: an ordered, asynchronous work queue on one device; and each thread's current stream.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include "rankmesh/device.hpp"
#include "rankmesh/event.hpp"

namespace rankmesh {

class DeviceBackend;

// Work enqueued on a stream runs in order, asynchronously to the thread that enqueued it. All
// calls are thread-safe and none blocks on the stream's work except synchronize(). A stream
// belongs to the backend that created it, which must outlive it.
//
// Failure is sticky: when work throws (or the stream waits on an event that failed), later work
// is skipped, events recorded later complete with that error, and synchronize() rethrows it.
class Stream {
public:
  virtual ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  DeviceBackend& backend() const noexcept { return backend_; }
  Device device() const noexcept;
  std::uint64_t id() const noexcept { return id_; }  // unique in the process
  std::string name() const;                          // "cpu:0 stream 3"

  // Runs `work` after everything enqueued before it.
  virtual void enqueue(std::function<void()> work) = 0;
  // `event` completes once everything enqueued so far has run. An event is recorded once:
  // Error(invalid_argument) for a user event or one already recorded.
  virtual void record(Event& event) = 0;
  // A new event recorded here.
  std::shared_ptr<Event> record();
  // Work enqueued after this call starts only once `event` has completed.
  virtual void wait(const Event& event) = 0;
  // Work enqueued after this call starts only once the work enqueued on `other` so far has run.
  void wait_stream(Stream& other);

  // True when all work enqueued so far has run (or been skipped).
  virtual bool query() const = 0;
  // The stream's first error, or null.
  virtual std::exception_ptr error() const = 0;
  // True while a device graph capture (CUDA graphs) records this stream's work instead of
  // running it: operations that must wait on the host cannot be issued then.
  virtual bool capturing() const { return false; }
  // Blocks until the work enqueued so far has run. Throws Error(timeout) naming the stream when
  // `timeout` passes first, and rethrows the stream's error.
  void synchronize(std::chrono::nanoseconds timeout);

protected:
  explicit Stream(DeviceBackend& backend);
  // For implementations: marks `event` as recorded here (the checks of record()) and completes it.
  void bind_event(Event& event) const;
  static void finish_event(Event& event, std::exception_ptr error);
  // For device streams: attaches the device's own event (kept alive with the Event).
  static void set_native_event(Event& event, std::shared_ptr<void> native);

private:
  DeviceBackend& backend_;
  const std::uint64_t id_;
};

// A stream whose work runs on one host worker thread of its own, started when the first work
// arrives. Waiting on an event parks that thread; it never spins. Destroying the stream waits
// for the work already enqueued, except what sits behind an event that has not completed: that
// is dropped, and the events recorded behind it fail with Error(cancelled).
std::shared_ptr<Stream> make_host_stream(DeviceBackend& backend);

// This thread's current stream on `backend`: the innermost live StreamGuard's, else
// backend.default_stream().
Stream& current_stream(DeviceBackend& backend);
// This thread's current stream on host_backend().
Stream& current_stream();

// Makes `stream` this thread's current stream on its backend for a scope, and restores the
// previous one when destroyed. Guards nest; destroy them on the thread that made them.
class StreamGuard {
public:
  explicit StreamGuard(Stream& stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

private:
  const DeviceBackend* backend_;
  Stream* previous_;  // null: the backend's default stream
};

}  // namespace rankmesh
