#include "rankmesh/stream.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "rankmesh/device_backend.hpp"
#include "rankmesh/error.hpp"

#include "duration_text.hpp"

namespace rankmesh {

namespace {

std::atomic<std::uint64_t> next_stream_id{0};

}  // namespace

Stream::Stream(DeviceBackend& backend)
    : backend_(backend), id_(next_stream_id.fetch_add(1, std::memory_order_relaxed)) {}

Stream::~Stream() = default;

Device Stream::device() const noexcept { return backend_.device(); }

std::string Stream::name() const { return to_string(device()) + " stream " + std::to_string(id_); }

std::shared_ptr<Event> Stream::record() {
  auto event = Event::create();
  record(*event);
  return event;
}

void Stream::wait_stream(Stream& other) {
  if (&other == this) return;  // a stream's own work is already in order
  wait(*other.record());
}

void Stream::synchronize(std::chrono::nanoseconds timeout) {
  auto done = record();
  if (!done->wait_for(timeout)) {
    throw Error(Errc::timeout,
                name() + " did not finish its work within " + detail::duration_text(timeout));
  }
  if (auto error = done->error()) std::rethrow_exception(error);
}

void Stream::bind_event(Event& event) const { event.bind(device(), id_); }

void Stream::finish_event(Event& event, std::exception_ptr error) { event.finish(std::move(error)); }

void Stream::set_native_event(Event& event, std::shared_ptr<void> native) {
  event.native_ = std::move(native);
}

namespace {

class HostStream final : public Stream {
public:
  explicit HostStream(DeviceBackend& backend)
      : Stream(backend), state_(std::make_shared<State>(name())) {}

  ~HostStream() override {
    std::thread worker;
    {
      std::lock_guard lock(state_->mutex);
      state_->stopping = true;
      worker = std::move(worker_);
      state_->cv.notify_one();
    }
    if (!worker.joinable()) return;
    // The last reference may go away in work or a callback running on the worker itself; the
    // worker owns its state, so it can finish on its own.
    if (worker.get_id() == std::this_thread::get_id()) {
      worker.detach();
    } else {
      worker.join();
    }
  }

  void enqueue(std::function<void()> work) override {
    if (!work) throw Error(Errc::invalid_argument, "enqueue on " + name() + ": empty work");
    push(Item{Item::Kind::work, std::move(work), nullptr, nullptr});
  }

  void record(Event& event) override {
    bind_event(event);
    auto shared = event.shared_from_this();
    std::exception_ptr error;
    {
      std::unique_lock lock(state_->mutex);
      if (!state_->idle() || state_->finishing > 0) {
        push_locked(lock, Item{Item::Kind::record, nullptr, std::move(shared), nullptr});
        return;
      }
      error = state_->error;
    }
    // Nothing is pending, so the event is complete already; skipping the worker keeps a record
    // on an idle stream (the common case for a freshly produced host tensor) cheap.
    finish_event(event, std::move(error));
  }

  void wait(const Event& event) override {
    if (event.query() && !event.error()) return;
    push(Item{Item::Kind::wait, nullptr, nullptr, event.shared_from_this()});
  }

  bool query() const override {
    std::lock_guard lock(state_->mutex);
    return state_->idle();
  }

  std::exception_ptr error() const override {
    std::lock_guard lock(state_->mutex);
    return state_->error;
  }

private:
  struct Item {
    enum class Kind { work, record, wait } kind;
    std::function<void()> work;          // work
    std::shared_ptr<Event> event;        // record: completes when the worker reaches it
    std::shared_ptr<const Event> waited; // wait: later items start once it completes
  };

  // Shared by the stream, its worker and the callbacks of the events the worker waits on, so
  // that each can outlive the others.
  struct State : std::enable_shared_from_this<State> {
    explicit State(std::string n) : name(std::move(n)) {}

    const std::string name;
    std::mutex mutex;
    std::condition_variable cv;  // wakes the worker
    std::deque<Item> queue;
    bool busy = false;      // the worker runs an item outside the lock
    int finishing = 0;      // the worker completes a recorded event outside the lock
    bool blocked = false;   // the worker waits for `blocked_on` before the next item
    std::shared_ptr<const Event> blocked_on;
    bool stopping = false;
    std::exception_ptr error;  // sticky: the first failure

    bool idle() const { return queue.empty() && !busy && !blocked; }
    void run();
    void resume();
    void drop_remaining(std::unique_lock<std::mutex>& lock);
  };

  void push(Item item) {
    std::unique_lock lock(state_->mutex);
    push_locked(lock, std::move(item));
  }

  void push_locked(std::unique_lock<std::mutex>&, Item item) {
    if (!worker_.joinable()) {
      // Started on first use: a stream that never gets work costs no thread.
      worker_ = std::thread([state = state_] { state->run(); });
    }
    state_->queue.push_back(std::move(item));
    state_->cv.notify_one();
  }

  std::shared_ptr<State> state_;
  std::thread worker_;  // guarded by state_->mutex
};

void HostStream::State::run() {
  std::unique_lock lock(mutex);
  for (;;) {
    cv.wait(lock, [&] { return stopping || (!queue.empty() && !blocked); });
    if (blocked) {  // stopping while waiting on an event that may never complete
      drop_remaining(lock);
      return;
    }
    if (queue.empty()) return;  // stopping, and everything enqueued has run
    std::exception_ptr failed = error;
    {
      Item item = std::move(queue.front());
      queue.pop_front();
      // A record is not work: once popped, everything before it has run, so query() may say
      // so while its event is being completed. `finishing` keeps record()'s shortcut off
      // meanwhile, so events of one stream still complete in order.
      const bool is_record = item.kind == Item::Kind::record;
      if (is_record) {
        ++finishing;
      } else {
        busy = true;
      }
      lock.unlock();
      switch (item.kind) {
        case Item::Kind::work:
          if (!failed) {
            try {
              item.work();
            } catch (...) {
              failed = std::current_exception();
            }
          }
          break;
        case Item::Kind::record:
          finish_event(*item.event, failed);
          break;
        case Item::Kind::wait:
          if (failed) break;  // later work is skipped anyway
          if (item.waited->query()) {
            failed = item.waited->error();
            break;
          }
          lock.lock();
          blocked = true;
          blocked_on = item.waited;
          lock.unlock();
          // Park instead of blocking on the event: the callback wakes this worker. It may run
          // right here when the event completed meanwhile.
          item.waited->on_complete([weak = weak_from_this()] {
            if (auto state = weak.lock()) state->resume();
          });
          break;
      }
      // `item` (and what its work captured) is released here, outside the lock.
      item = Item{};
      lock.lock();
      if (is_record) {
        --finishing;
      } else {
        busy = false;
      }
    }
    if (failed && !error) error = failed;
  }
}

void HostStream::State::resume() {
  std::lock_guard lock(mutex);
  if (!blocked) return;
  if (!error) error = blocked_on->error();
  blocked = false;
  blocked_on.reset();
  cv.notify_one();
}

void HostStream::State::drop_remaining(std::unique_lock<std::mutex>& lock) {
  std::deque<Item> dropped;
  dropped.swap(queue);
  auto waited_on = blocked_on;
  lock.unlock();
  auto error = std::make_exception_ptr(Error(
      Errc::cancelled, name + " was destroyed while its work waited on " + waited_on->describe() +
                           "; the work behind that wait was dropped"));
  for (auto& item : dropped) {
    if (item.kind == Item::Kind::record) finish_event(*item.event, error);
  }
}

// The streams a thread made current with StreamGuard, per backend; few backends, so a vector.
struct CurrentStream {
  const DeviceBackend* backend;
  Stream* stream;
};
thread_local std::vector<CurrentStream> t_current_streams;

Stream* find_current(const DeviceBackend* backend) {
  for (const auto& entry : t_current_streams) {
    if (entry.backend == backend) return entry.stream;
  }
  return nullptr;
}

void set_current(const DeviceBackend* backend, Stream* stream) {
  for (auto& entry : t_current_streams) {
    if (entry.backend == backend) {
      entry.stream = stream;
      return;
    }
  }
  t_current_streams.push_back(CurrentStream{backend, stream});
}

}  // namespace

std::shared_ptr<Stream> make_host_stream(DeviceBackend& backend) {
  return std::make_shared<HostStream>(backend);
}

Stream& current_stream(DeviceBackend& backend) {
  if (Stream* stream = find_current(&backend)) return *stream;
  return backend.default_stream();
}

Stream& current_stream() { return current_stream(host_backend()); }

StreamGuard::StreamGuard(Stream& stream)
    : backend_(&stream.backend()), previous_(find_current(backend_)) {
  set_current(backend_, &stream);
}

StreamGuard::~StreamGuard() { set_current(backend_, previous_); }

}  // namespace rankmesh
