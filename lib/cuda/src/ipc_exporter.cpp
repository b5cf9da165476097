#include "ipc_exporter.hpp"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <unistd.h>

#include <condition_variable>
#include <memory>

#include "cuda_check.hpp"
#include "cuda_stream.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh::cuda {
namespace {

// The base allocation holding `ptr`: an IPC handle names a whole allocation, and the importer
// finds the tensor in it by its offset. The driver call comes through the runtime's entry
// point, so nothing links libcuda itself (it is loaded at run time, as the runtime loads it).
void* base_of(const void* ptr, int device) {
  static PFN_cuMemGetAddressRange_v3020 get_range = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 3020, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuMemGetAddressRange_v3020>(fn);
  }();
  if (get_range == nullptr)
    throw Error(Errc::device, "CUDA IPC: the driver offers no cuMemGetAddressRange");
  CUdeviceptr base = 0;
  std::size_t size = 0;
  if (get_range(&base, &size, reinterpret_cast<CUdeviceptr>(ptr)) != CUDA_SUCCESS)
    throw Error(Errc::device, "CUDA IPC: cuMemGetAddressRange failed for a tensor on cuda:" +
                                  std::to_string(device));
  return reinterpret_cast<void*>(base);
}

}  // namespace

IpcExporter::~IpcExporter() {
  if (!set_up_) return;
  DeviceScope scope(device_);
  (void)cudaStreamSynchronize(poll_stream_);  // the read-back writes into mirror_
  for (auto& slot : slots_)
    if (slot) (void)cudaEventDestroy(slot->ready);
  for (const Event& event : free_events_) (void)cudaEventDestroy(event.event);
  (void)cudaEventDestroy(polled_);
  (void)cudaStreamDestroy(poll_stream_);
  (void)cudaFreeHost(mirror_);
  (void)cudaFree(acks_);
}

// Once, on the first export: the acknowledgement array (its own allocation, so that its handle
// names it alone), zeroed, and what reads it back.
void IpcExporter::set_up_locked() {
  if (set_up_) return;
  DeviceScope scope(device_);
  const std::size_t bytes = kSlots * sizeof(std::uint32_t);
  check(cudaMalloc(&acks_, bytes), "cudaMalloc (IPC acknowledgements)", device_);
  check(cudaMemset(acks_, 0, bytes), "cudaMemset (IPC acknowledgements)", device_);
  check(cudaIpcGetMemHandle(&acks_handle_, acks_), "cudaIpcGetMemHandle (acknowledgements)", device_);
  check(cudaMallocHost(reinterpret_cast<void**>(&mirror_), bytes), "cudaMallocHost", device_);
  check(cudaStreamCreateWithFlags(&poll_stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags",
        device_);
  check(cudaEventCreateWithFlags(&polled_, cudaEventDisableTiming), "cudaEventCreateWithFlags",
        device_);
  slots_.resize(kSlots);
  set_up_ = true;
}

IpcExporter::Event IpcExporter::take_event_locked() {
  if (!free_events_.empty()) {
    Event event = free_events_.back();
    free_events_.pop_back();
    return event;
  }
  Event event;
  check(cudaEventCreateWithFlags(&event.event, cudaEventInterprocess | cudaEventDisableTiming),
        "cudaEventCreateWithFlags (interprocess)", device_);
  if (const cudaError_t result = cudaIpcGetEventHandle(&event.handle, event.event);
      result != cudaSuccess) {
    (void)cudaEventDestroy(event.event);
    check(result, "cudaIpcGetEventHandle", device_);
  }
  return event;
}

void IpcExporter::release_locked(std::uint32_t slot) {
  free_events_.push_back(Event{slots_[slot]->ready, slots_[slot]->ready_handle});
  slots_[slot].reset();  // the exported copy goes back to the allocator
  --held_;
}

// Takes in the last read-back (if it has arrived), drops the copies whose importers wrote their
// generation and those held past their time, and starts the next read-back while any is held.
void IpcExporter::reclaim_locked() {
  if (polling_) {
    const cudaError_t state = cudaEventQuery(polled_);
    if (state != cudaErrorNotReady) {
      check(state, "cudaEventQuery (IPC acknowledgements)", device_);
      polling_ = false;
      for (std::uint32_t slot = 0; slot < kSlots; ++slot)
        if (slots_[slot] && mirror_[slot] == slots_[slot]->generation) release_locked(slot);
    }
  }
  const auto now = std::chrono::steady_clock::now();
  for (std::uint32_t slot = 0; slot < kSlots; ++slot)
    if (slots_[slot] && slots_[slot]->until <= now) release_locked(slot);
  if (held_ == 0 || polling_) return;
  check(cudaMemcpyAsync(mirror_, acks_, kSlots * sizeof(std::uint32_t), cudaMemcpyDeviceToHost,
                        poll_stream_),
        "cudaMemcpyAsync (IPC acknowledgements)", device_);
  check(cudaEventRecord(polled_, poll_stream_), "cudaEventRecord", device_);
  polling_ = true;
}

void IpcExporter::reclaim() {
  std::lock_guard lock(mutex_);
  if (held_ == 0 && !polling_) return;
  DeviceScope scope(device_);
  reclaim_locked();
}

std::size_t IpcExporter::held() {
  reclaim();
  std::lock_guard lock(mutex_);
  return held_;
}

IpcDescriptor IpcExporter::export_tensor(const Tensor& t, CudaStream& stream,
                                         std::chrono::steady_clock::time_point accept_until) {
  std::lock_guard lock(mutex_);
  DeviceScope scope(device_);
  set_up_locked();
  reclaim_locked();
  if (held_ == kSlots)
    throw Error(Errc::device, "CUDA IPC: " + std::to_string(kSlots) +
                                  " exports are held already (their importers have not copied them)");
  while (slots_[next_slot_]) next_slot_ = (next_slot_ + 1) % kSlots;
  const std::uint32_t slot = next_slot_;

  IpcDescriptor d;
  d.pid = static_cast<std::int32_t>(::getpid());
  d.device = device_;
  void* base = base_of(t.data(), device_);
  // Not cached per base: the allocator may free a block and cudaMalloc may hand the same address
  // out again as another allocation, whose handle differs; the importer caches by handle.
  check(cudaIpcGetMemHandle(&d.memory, base), "cudaIpcGetMemHandle", device_);
  d.offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(t.data()) -
                                        static_cast<const std::byte*>(base));
  d.nbytes = t.nbytes();
  d.address = reinterpret_cast<std::uint64_t>(t.data());
  d.acks = acks_handle_;
  d.acks_address = reinterpret_cast<std::uint64_t>(acks_);
  d.slot = slot;
  if (++generation_ == 0) ++generation_;  // 0 is what a fresh slot holds
  d.generation = generation_;
  const auto now = std::chrono::steady_clock::now();
  d.accept_until_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(accept_until.time_since_epoch()).count();

  Event event = take_event_locked();
  d.ready = event.handle;
  d.ready_address = reinterpret_cast<std::uint64_t>(event.event);
  // The record must be on the stream before the descriptor leaves: an importer's wait binds to
  // the latest record when it is issued, and a wait on an event never recorded passes at once.
  // The stream issues it now unless host-side work is pending on it; then this waits for that
  // host work (not for the device), as long as the import would be accepted.
  struct Issued {
    std::mutex mutex;
    std::condition_variable cv;
    bool done = false;
  };
  auto issued = std::make_shared<Issued>();
  stream.issue(
      [event = event.event, issued, device = device_](cudaStream_t s) {
        const cudaError_t result = cudaEventRecord(event, s);
        {
          std::lock_guard done_lock(issued->mutex);
          issued->done = true;
        }
        issued->cv.notify_all();
        check(result, "cudaEventRecord (interprocess)", device);
      },
      t, Tensor());
  {
    std::unique_lock wait_lock(issued->mutex);
    while (!issued->done) {
      if (stream.error() || std::chrono::steady_clock::now() >= accept_until) break;
      issued->cv.wait_for(wait_lock, std::chrono::milliseconds(10));
    }
    if (!issued->done) {
      // The record may still be issued later: the event stays out of the pool for good.
      throw Error(Errc::device, "CUDA IPC: the exporter's stream did not reach its record in time");
    }
  }
  // Held as long again as imports are accepted (saturating: a timeout may be "for ever").
  const auto span = accept_until > now ? accept_until - now : std::chrono::steady_clock::duration{};
  const auto until = span < std::chrono::steady_clock::time_point::max() - accept_until
                         ? accept_until + span
                         : std::chrono::steady_clock::time_point::max();
  slots_[slot] = Held{t, event.event, event.handle, d.generation, until};
  ++held_;
  next_slot_ = (slot + 1) % kSlots;
  return d;
}

}  // namespace rankmesh::cuda
