#include "cuda_stream.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "cuda_check.hpp"
#include "event_pool.hpp"
#include "rankmesh/device_backend.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh::cuda {

namespace {

// What the stream's thread does, in order, once the device work before it is issued.
struct Item {
  enum class Kind { host_work, device_op, record, wait } kind;
  std::function<void()> work;                   // host_work
  std::function<void(cudaStream_t)> op;         // device_op
  Tensor a, b;                                  // device_op: kept alive until the next record
  std::shared_ptr<Event> event;                 // record
  std::shared_ptr<const Event> waited;          // wait
  std::uint64_t gate = 0;                       // host_work: the gate issued for it, 0: none yet
  bool watching = false;                        // wait: a completion callback is registered
};

}  // namespace

// A host function the device runs once it reaches it: either a gate (the device work before a
// host item is done) or the completion of a recorded event.
struct Notice {
  std::shared_ptr<CudaStream::State> state;
  std::uint64_t gate = 0;  // nonzero: a gate
  std::shared_ptr<Event> event;
  std::shared_ptr<void> native;
  std::vector<Tensor> holds;
};

struct CudaStream::State : std::enable_shared_from_this<CudaStream::State> {
  State(int d, cudaStream_t s, bool o, std::shared_ptr<EventPool> e, std::string n)
      : device(d), stream(s), owned(o), events(std::move(e)), name(std::move(n)) {}

  const int device;
  const cudaStream_t stream;
  const bool owned;
  const std::shared_ptr<EventPool> events;
  const std::string name;

  mutable std::mutex mutex;
  std::condition_variable cv;     // wakes the thread: a notice, an item, a completed event
  std::deque<Item> deferred;      // host-side items and the device work queued behind them
  bool busy = false;              // the thread runs an item outside the lock
  std::deque<Notice*> notices;    // from the device, in the order it reached them
  int outstanding = 0;            // host functions launched whose notice is not handled yet
  std::uint64_t next_gate = 0;
  std::uint64_t gates_passed = 0;
  std::vector<Tensor> holds;      // tensors of issued copies, until the next record completes
  std::exception_ptr error;       // sticky: the first failure
  bool stopping = false;
  std::thread thread;

  bool direct() const { return deferred.empty() && !busy; }

  static void CUDART_CB reached(void* raw) {
    auto* notice = static_cast<Notice*>(raw);
    State& self = *notice->state;
    std::lock_guard lock(self.mutex);
    self.notices.push_back(notice);
    self.cv.notify_one();
  }

  void start_thread_locked() {
    if (!thread.joinable()) thread = std::thread([self = shared_from_this()] { self->run(); });
  }

  // Issues the event's record and its completion notice. Called under the lock, in order.
  void record_locked(const std::shared_ptr<Event>& event) {
    std::shared_ptr<void> native = events->take();
    check(cudaEventRecord(static_cast<cudaEvent_t>(native.get()), stream), "cudaEventRecord", device);
    launch_locked(new Notice{shared_from_this(), 0, event, std::move(native), std::move(holds)});
    holds.clear();
  }

  void launch_locked(Notice* notice) {
    const cudaError_t result = cudaLaunchHostFunc(stream, &State::reached, notice);
    if (result != cudaSuccess) {
      delete notice;
      check(result, "cudaLaunchHostFunc", device);
    }
    ++outstanding;
    start_thread_locked();
  }

  void fail_locked(std::exception_ptr e) {
    if (!error) error = std::move(e);
  }

  // The front item, once it may run: gates reached, waited events complete. May release the
  // lock for a moment (the front item stays: only this thread pops).
  bool front_ready_locked(std::unique_lock<std::mutex>& lock) {
    Item& item = deferred.front();
    switch (item.kind) {
      case Item::Kind::host_work:
        if (error) return true;  // skipped anyway
        if (item.gate == 0) {
          item.gate = ++next_gate;
          try {
            launch_locked(new Notice{shared_from_this(), item.gate, nullptr, nullptr, {}});
          } catch (...) {
            fail_locked(std::current_exception());
            return true;
          }
        }
        return gates_passed >= item.gate;
      case Item::Kind::wait:
        if (item.waited->query()) return true;
        if (stopping) return true;  // dropped below: nobody will complete it for us
        if (!item.watching) {
          item.watching = true;
          // Registered without the lock: an event completing meanwhile runs the callback right
          // here, and the callback takes the lock.
          std::shared_ptr<const Event> waited = item.waited;
          std::weak_ptr<State> weak = shared_from_this();
          lock.unlock();
          waited->on_complete([weak] {
            if (auto self = weak.lock()) {
              std::lock_guard relock(self->mutex);
              self->cv.notify_one();
            }
          });
          lock.lock();
          return waited->query();
        }
        return item.waited->query();
      default: return true;
    }
  }

  // Runs the front item; the lock is released only around host work.
  void run_front(std::unique_lock<std::mutex>& lock) {
    Item item = std::move(deferred.front());
    deferred.pop_front();
    switch (item.kind) {
      case Item::Kind::host_work: {
        if (error) return;
        busy = true;
        lock.unlock();
        std::exception_ptr failed;
        try {
          item.work();
        } catch (...) {
          failed = std::current_exception();
        }
        lock.lock();
        busy = false;
        if (failed) fail_locked(failed);
        return;
      }
      case Item::Kind::device_op:
        if (error) return;
        try {
          item.op(stream);
          if (item.a.defined()) holds.push_back(std::move(item.a));
          if (item.b.defined()) holds.push_back(std::move(item.b));
        } catch (...) {
          fail_locked(std::current_exception());
        }
        return;
      case Item::Kind::record:
        if (error) {
          finish_later(item.event, error, lock);
          return;
        }
        try {
          record_locked(item.event);
        } catch (...) {
          fail_locked(std::current_exception());
          finish_later(item.event, error, lock);
        }
        return;
      case Item::Kind::wait:
        if (!item.waited->query()) {  // stopping: the stream goes away before the event completes
          fail_locked(std::make_exception_ptr(Error(
              Errc::cancelled, name + " was destroyed while waiting on " + item.waited->describe())));
          return;
        }
        if (auto e = item.waited->error()) {
          fail_locked(e);
        } else if (void* native = item.waited->native_handle()) {
          try {
            check(cudaStreamWaitEvent(stream, static_cast<cudaEvent_t>(native), 0),
                  "cudaStreamWaitEvent", device);
          } catch (...) {
            fail_locked(std::current_exception());
          }
        }
        return;
    }
  }

  // Completes an event outside the lock (its callbacks may take locks of their own).
  static void finish_later(const std::shared_ptr<Event>& event, std::exception_ptr e,
                           std::unique_lock<std::mutex>& lock) {
    lock.unlock();
    CudaStream::finish_event(*event, std::move(e));
    lock.lock();
  }

  void handle(Notice* notice, std::unique_lock<std::mutex>& lock) {
    --outstanding;
    if (notice->gate != 0) {
      gates_passed = notice->gate;
      delete notice;
      return;
    }
    // A fault of the device's work shows here (a sticky context error); record it.
    const cudaError_t status = cudaEventQuery(static_cast<cudaEvent_t>(notice->native.get()));
    if (status != cudaSuccess && status != cudaErrorNotReady) {
      fail_locked(std::make_exception_ptr(Error(
          Errc::device, name + ": the work before an event failed: " + describe(status))));
    }
    std::exception_ptr e = status == cudaSuccess ? nullptr : error;
    lock.unlock();
    CudaStream::finish_event(*notice->event, e);
    delete notice;  // drops the held tensors: their copies have run
    lock.lock();
  }

  void run() {
    std::unique_lock lock(mutex);
    for (;;) {
      if (!notices.empty()) {
        Notice* notice = notices.front();
        notices.pop_front();
        handle(notice, lock);
        continue;
      }
      if (!deferred.empty() && !busy && front_ready_locked(lock)) {
        run_front(lock);
        continue;
      }
      if (stopping && deferred.empty() && outstanding == 0) return;
      cv.wait(lock);
    }
  }
};

namespace {
std::string stream_name(DeviceBackend& backend, const Stream& stream) {
  return to_string(backend.device()) + " stream " + std::to_string(stream.id());
}
}  // namespace

CudaStream::CudaStream(DeviceBackend& backend, int device, cudaStream_t stream, bool owned,
                       std::shared_ptr<EventPool> events)
    : Stream(backend),
      state_(std::make_shared<State>(device, stream, owned, std::move(events),
                                     stream_name(backend, *this))) {}

CudaStream::~CudaStream() {
  std::thread thread;
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
    state_->cv.notify_one();
    thread = std::move(state_->thread);
  }
  if (thread.joinable()) {
    // The last reference may go in a completion running on the stream's own thread: the
    // thread owns the state and finishes on its own then.
    if (thread.get_id() == std::this_thread::get_id()) {
      thread.detach();
    } else {
      thread.join();
    }
  }
  // Teardown waits for the device work already issued, so that the tensors it reads and writes
  // outlive it; then the stream goes.
  (void)cudaStreamSynchronize(state_->stream);
  std::lock_guard lock(state_->mutex);
  state_->holds.clear();
  if (state_->owned) (void)cudaStreamDestroy(state_->stream);
}

cudaStream_t CudaStream::native() const noexcept { return state_->stream; }

void CudaStream::enqueue(std::function<void()> work) {
  if (!work) throw Error(Errc::invalid_argument, "enqueue on " + name() + ": empty work");
  std::lock_guard lock(state_->mutex);
  Item item{Item::Kind::host_work, std::move(work), {}, {}, {}, nullptr, nullptr, 0, false};
  state_->deferred.push_back(std::move(item));
  state_->start_thread_locked();
  state_->cv.notify_one();
}

void CudaStream::record(Event& event) {
  if (capturing())
    throw Error(Errc::device,
                "record on " + name() + " during a CUDA graph capture: a rankmesh event completes "
                "on the host, which captured work never reaches until the graph is replayed; "
                "issue host-synchronizing operations (collectives staged through host memory, "
                "tensor-dict sends to other processes) outside the capture");
  bind_event(event);
  auto shared = event.shared_from_this();
  std::unique_lock lock(state_->mutex);
  if (state_->error) {
    auto e = state_->error;
    lock.unlock();
    finish_event(event, e);
    return;
  }
  if (!state_->direct()) {
    Item item{Item::Kind::record, {}, {}, {}, {}, std::move(shared), nullptr, 0, false};
    state_->deferred.push_back(std::move(item));
    state_->cv.notify_one();
    return;
  }
  std::shared_ptr<void> native = state_->events->take();
  check(cudaEventRecord(static_cast<cudaEvent_t>(native.get()), state_->stream), "cudaEventRecord",
        state_->device);
  // Set before record() returns, so before anyone else can see the event: other CUDA streams
  // then wait on the device itself (deferred records leave it unset: those wait on the host).
  set_native_event(event, native);
  state_->launch_locked(
      new Notice{state_, 0, std::move(shared), std::move(native), std::move(state_->holds)});
  state_->holds.clear();
}

void CudaStream::wait(const Event& event) {
  std::lock_guard lock(state_->mutex);
  if (state_->direct()) {
    if (event.query()) {
      if (auto e = event.error()) state_->fail_locked(e);
      return;
    }
    if (void* native = event.native_handle()) {
      check(cudaStreamWaitEvent(state_->stream, static_cast<cudaEvent_t>(native), 0),
            "cudaStreamWaitEvent", state_->device);
      return;
    }
  }
  Item item{Item::Kind::wait, {}, {}, {}, {}, nullptr, event.shared_from_this(), 0, false};
  state_->deferred.push_back(std::move(item));
  state_->start_thread_locked();
  state_->cv.notify_one();
}

bool CudaStream::query() const {
  std::lock_guard lock(state_->mutex);
  if (!state_->direct() || state_->outstanding > 0) return false;
  const cudaError_t status = cudaStreamQuery(state_->stream);
  if (status == cudaErrorNotReady) return false;
  (void)cudaGetLastError();
  return true;  // a failed stream has run (or skipped) all it will
}

std::exception_ptr CudaStream::error() const {
  std::lock_guard lock(state_->mutex);
  return state_->error;
}

bool CudaStream::capturing() const {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(state_->stream, &status) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return status == cudaStreamCaptureStatusActive;
}

void CudaStream::issue(std::function<void(cudaStream_t)> op, Tensor a, Tensor b) {
  std::lock_guard lock(state_->mutex);
  if (state_->error) return;
  if (state_->direct()) {
    op(state_->stream);
    if (a.defined()) state_->holds.push_back(std::move(a));
    if (b.defined()) state_->holds.push_back(std::move(b));
    return;
  }
  Item item{Item::Kind::device_op, {}, std::move(op), std::move(a), std::move(b), nullptr, nullptr, 0, false};
  state_->deferred.push_back(std::move(item));
  state_->cv.notify_one();
}

}  // namespace rankmesh::cuda
