#include "devices.hpp"

#include <Python.h>

#include <charconv>
#include <map>
#include <mutex>
#include <set>
#include <utility>

#include "rankmesh/error.hpp"
#include "rankmesh/event.hpp"
#include "rankmesh/stream.hpp"

#if defined(RANKMESH_HAVE_CUDA)
#include "environment.hpp"  // the launcher's local rank, read as the runtime reads it
#include "rankmesh/cuda_backend.hpp"
#endif

namespace rankmesh::python {

namespace {

// DLPack's stream values for CUDA (the array API's __dlpack__): -1 no synchronization, 1 the
// legacy default stream, 2 the per-thread default stream; 0 is ambiguous and disallowed.
constexpr std::intptr_t kNoSync = -1;
constexpr std::intptr_t kLegacyDefault = 1;  // cudaStreamLegacy's own value
constexpr std::intptr_t kPerThreadDefault = 2;

// "cuda" -> nullopt, "cuda:3" -> 3; Error(invalid_argument) for anything else.
std::optional<int> cuda_index(const std::string& device) {
  auto refuse = [&] {
    throw Error(Errc::invalid_argument,
                "device='" + device + "': expected 'cpu', 'cuda' or 'cuda:N'");
  };
  const std::string prefix = "cuda";
  if (device.compare(0, prefix.size(), prefix) != 0) refuse();
  if (device.size() == prefix.size()) return std::nullopt;
  if (device[prefix.size()] != ':' || device.size() == prefix.size() + 1) refuse();
  int index = -1;
  const char* begin = device.data() + prefix.size() + 1;
  const char* end = device.data() + device.size();
  auto [ptr, ec] = std::from_chars(begin, end, index);
  if (ec != std::errc() || ptr != end || index < 0) refuse();
  return index;
}

}  // namespace

#if defined(RANKMESH_HAVE_CUDA)

struct Devices::Cuda {
  std::map<int, std::unique_ptr<CudaBackend>> backends;  // by device index
  // Consumers' streams, wrapped once per (device, stream) and kept: destroying a wrapper
  // synchronizes the stream it wraps, which a consumer's __dlpack__ must never do. torch's
  // streams come from pools it never frees; a stream handed to rankmesh must outlive the
  // runtime (CudaBackend::wrap_stream's rule). Declared after `backends`, so destroyed first.
  mutable std::mutex mutex;
  std::map<std::pair<int, std::intptr_t>, std::shared_ptr<Stream>> consumers;

  CudaBackend& backend(int index) const { return *backends.at(index); }

  Stream& consumer(int index, std::intptr_t stream) {
    std::lock_guard lock(mutex);
    auto& wrapped = consumers[{index, stream}];
    if (!wrapped) wrapped = backend(index).wrap_stream(reinterpret_cast<void*>(stream));
    return *wrapped;
  }
};

Devices::Devices(const std::string& device, const RuntimeOptions& options) : timeout_(options.timeout) {
  if (device.empty() || device == "cpu") return;
  const std::optional<int> chosen = cuda_index(device);
  const int count = CudaBackend::device_count();
  if (count == 0)
    throw Error(Errc::device, "device='" + device + "': no CUDA device can be used: " +
                                  CudaBackend::unavailable_reason());
  std::set<int> indices;
  if (chosen) {
    if (*chosen >= count)
      throw Error(Errc::device, "device='" + device + "': this process sees " +
                                    std::to_string(count) + " CUDA device(s)");
    indices.insert(*chosen);
  } else if (std::optional<ProcessPlace> place = process_place_from_environment()) {
    indices.insert(place->local_rank % count);
  } else {
    const int per_node = options.ranks_per_node > 0 ? options.ranks_per_node : options.world_size;
    for (int rank = 0; rank < options.world_size; ++rank) indices.insert(rank % per_node % count);
  }
  auto cuda = std::make_unique<Cuda>();
  for (int index : indices) {
    CudaBackendOptions backend_options;
    backend_options.device = index;
    cuda->backends.emplace(index, std::make_unique<CudaBackend>(backend_options));
  }
  cuda_ = std::move(cuda);
}

#else  // a build without the CUDA backend: host tensors only

struct Devices::Cuda {};

Devices::Devices(const std::string& device, const RuntimeOptions& options) : timeout_(options.timeout) {
  if (device.empty() || device == "cpu") return;
  (void)cuda_index(device);  // a misspelling is named as such
  throw Error(Errc::device, "device='" + device +
                                "': this build of rankmesh has no CUDA backend (no CUDA toolkit "
                                "was found when it was built)");
}

#endif

Devices::~Devices() {
  // Destroying a stream joins its thread, which may be dropping tensors whose memory Python
  // owns (taking the GIL to release it): let it have the GIL meanwhile.
  if (cuda_ && Py_IsInitialized() && !_Py_IsFinalizing() && PyGILState_Check()) {
    PyThreadState* state = PyEval_SaveThread();
    cuda_.reset();
    PyEval_RestoreThread(state);
  }
}

std::vector<DeviceBackend*> Devices::backends() const {
  std::vector<DeviceBackend*> result;
#if defined(RANKMESH_HAVE_CUDA)
  if (cuda_)
    for (const auto& [index, backend] : cuda_->backends) result.push_back(backend.get());
#endif
  return result;
}

std::intptr_t Devices::producer_stream(int index, const char* what) const {
  const std::string tensor = std::string(what) + ": a cuda:" + std::to_string(index) + " tensor";
#if defined(RANKMESH_HAVE_CUDA)
  if (!cuda_)
    throw Error(Errc::invalid_argument,
                tensor + ", but this runtime has no CUDA device: create it with "
                         "rankmesh.Runtime(..., device=\"cuda\") or "
                         "init_distributed_environment(..., device=\"cuda\")");
  if (!cuda_->backends.count(index)) {
    std::string have;
    for (const auto& entry : cuda_->backends) have += (have.empty() ? "cuda:" : ", cuda:") + std::to_string(entry.first);
    throw Error(Errc::invalid_argument, tensor + ", but this runtime's CUDA devices are " + have);
  }
  CudaBackend& backend = cuda_->backend(index);
  return reinterpret_cast<std::intptr_t>(CudaBackend::native_stream(current_stream(backend)));
#else
  throw Error(Errc::invalid_argument,
              tensor + ", but this build of rankmesh has no CUDA backend: host tensors only");
#endif
}

std::shared_ptr<Event> Devices::imported_ready_event(int index) const {
#if defined(RANKMESH_HAVE_CUDA)
  return current_stream(cuda_->backend(index)).record();
#else
  (void)index;
  throw Error(Errc::invalid_argument, "this build of rankmesh has no CUDA backend");
#endif
}

void Devices::order_consumer(const Tensor& tensor, std::optional<std::intptr_t> stream) {
  if (stream && (*stream == 0 || *stream < kNoSync))
    throw Error(Errc::invalid_argument,
                "__dlpack__(stream=" + std::to_string(*stream) +
                    "): DLPack allows None, -1, 1, 2 or a CUDA stream for CUDA tensors (0 is ambiguous)");
  const std::shared_ptr<Event>& ready = tensor.ready_event();
  if (!ready || (stream && *stream == kNoSync)) return;
  if (ready->query()) {
    if (std::exception_ptr error = ready->error()) std::rethrow_exception(error);
    return;
  }
#if defined(RANKMESH_HAVE_CUDA)
  if (cuda_ && stream && *stream > kPerThreadDefault && ready->native_handle()) {
    cuda_->consumer(tensor.device().index, *stream).wait(*ready);
    return;
  }
#endif
  ready->synchronize(timeout_);
}

void Devices::release_after_consumer(Tensor tensor, std::optional<std::intptr_t> stream) noexcept {
#if defined(RANKMESH_HAVE_CUDA)
  if (!cuda_ || tensor.device().type != DeviceType::cuda || !tensor.defined()) return;
  const std::intptr_t after = stream && *stream > kPerThreadDefault ? *stream : kLegacyDefault;
  try {
    std::shared_ptr<Event> used = cuda_->consumer(tensor.device().index, after).record();
    // Dropped on the completing thread (the wrapped stream's): a release that needs the GIL
    // (memory a Python producer lent) waits for it there, never on a rank's thread.
    auto held = std::make_shared<Tensor>(std::move(tensor));
    used->on_complete([held] { *held = Tensor(); });
  } catch (...) {
    // No event (a capture in progress, a failed device): the memory goes back now.
  }
#else
  (void)tensor;
  (void)stream;
#endif
}

}  // namespace rankmesh::python
