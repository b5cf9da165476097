#include "runtime_box.hpp"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "rankmesh/error.hpp"

namespace rankmesh::python {

namespace {

std::atomic<std::uint64_t> process_generation{0};

std::size_t index_in(const std::vector<int>& ranks, int rank) {
  return static_cast<std::size_t>(std::find(ranks.begin(), ranks.end(), rank) - ranks.begin());
}

RuntimeOptions with_backends(RuntimeOptions options, const Devices& devices) {
  for (DeviceBackend* backend : devices.backends()) options.backends.push_back(backend);
  return options;
}

}  // namespace

void watch_forks() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, [] { ++process_generation; }); });
}

RuntimeBox::RuntimeBox(RuntimeOptions options, std::shared_ptr<Devices> devices)
    : devices_(std::move(devices)),
      runtime_(std::make_unique<Runtime>(with_backends(std::move(options), *devices_))),
      local_ranks_(runtime_->local_ranks()),
      epochs_(local_ranks_.size()),
      process_generation_(process_generation.load()) {}

RuntimeBox::~RuntimeBox() { close(); }

RuntimeBox::Use::Use(RuntimeBox& box) : box_(box) {
  if (box.process_generation_ != process_generation.load())
    throw Error(Errc::invalid_config,
                "this rankmesh runtime was created before fork(): its threads and connections stay "
                "with the parent; create a new runtime in the child");
  ++box.users_;
  if (box.closing_.load()) {
    --box.users_;
    throw Error(Errc::not_initialized, "the rankmesh runtime is closed");
  }
}

RuntimeBox::Use::~Use() { --box_.users_; }

void RuntimeBox::close() {
  if (closing_.exchange(true)) return;
  if (process_generation_ != process_generation.load()) {
    // A child's copy: the parent's threads are not here to stop, and CUDA cannot be used
    // after fork(); leave the memory alone.
    (void)runtime_.release();
    (void)new std::shared_ptr<Devices>(std::move(devices_));
    return;
  }
  if (users_.load() > 0) runtime_->abort("the rankmesh runtime was closed");
  while (users_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  runtime_.reset();
}

std::uint64_t RuntimeBox::epoch(int rank) const noexcept {
  const std::size_t i = index_in(local_ranks_, rank);
  return i < epochs_.size() ? epochs_[i].load() : 0;
}

void RuntimeBox::advance_epoch(int rank) noexcept {
  const std::size_t i = index_in(local_ranks_, rank);
  if (i < epochs_.size()) ++epochs_[i];
}

}  // namespace rankmesh::python
