// OpQueue: a rank's asynchronous operations, run on its host stream in issue order, and the
// wait that lets a blocking call run after everything issued before it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>

#include "deadline.hpp"
#include "rankmesh/stream.hpp"

namespace rankmesh {

class OpQueue {
public:
  explicit OpQueue(int rank) : rank_(rank) {}

  // Runs `work` on `stream` after all work submitted before it; `keep_alive` (the rank) and
  // this queue live until it has run.
  void submit(Stream& stream, std::shared_ptr<const void> keep_alive, std::function<void()> work);
  // Waits until everything submitted has run. A no-op inside submitted work.
  void drain(Deadline deadline);
  // Whether the calling thread is running this queue's submitted work (the stream thread).
  bool running_here() const noexcept;

private:
  const int rank_;
  std::mutex mutex_;
  std::condition_variable done_;
  // Submitted and not yet run. Changed under mutex_ (the condition's waiters need that); read
  // without it by drain(), which every blocking call makes and which usually finds zero.
  std::atomic<std::size_t> unfinished_{0};
};

}  // namespace rankmesh
