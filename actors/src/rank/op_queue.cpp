#include "rank/op_queue.hpp"

#include <string>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {
// The queue whose submitted work this thread is running, if any.
thread_local const OpQueue* t_running_for = nullptr;
}  // namespace

void OpQueue::submit(Stream& stream, std::shared_ptr<const void> keep_alive,
                     std::function<void()> work) {
  {
    std::lock_guard lock(mutex_);
    unfinished_.fetch_add(1, std::memory_order_relaxed);
  }
  stream.enqueue([this, keep_alive = std::move(keep_alive), work = std::move(work)] {
    t_running_for = this;
    work();  // operations report their own errors through their handles: this never throws
    t_running_for = nullptr;
    std::lock_guard lock(mutex_);
    // Release: a drain() that reads zero without the mutex sees everything `work` did.
    unfinished_.fetch_sub(1, std::memory_order_release);
    done_.notify_all();
  });
}

bool OpQueue::running_here() const noexcept { return t_running_for == this; }

void OpQueue::drain(Deadline deadline) {
  if (unfinished_.load(std::memory_order_acquire) == 0 || t_running_for == this) return;
  std::unique_lock lock(mutex_);
  if (!done_.wait_until(lock, deadline,
                        [&] { return unfinished_.load(std::memory_order_acquire) == 0; }))
    throw Error(Errc::timeout, "rank " + std::to_string(rank_) +
                                   ": earlier asynchronous operations did not finish in time");
}

}  // namespace rankmesh
