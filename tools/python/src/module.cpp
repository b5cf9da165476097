// rankmesh._rankmesh: the C++ runtime for Python. The classes here are low level (a Runtime, the
// State of each of its ranks, their Groups); rankmesh.distributed gives them vLLM's names.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <optional>

#include "devices.hpp"
#include "errors.hpp"
#include "group_binding.hpp"
#include "rankmesh/call_site.hpp"
#include "rankmesh/device_backend.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/parallel_state.hpp"
#include "runtime_box.hpp"
#include "tensors.hpp"

namespace py = pybind11;
using rankmesh::python::RuntimeBox;

namespace {

std::shared_ptr<RuntimeBox> make_runtime(int world_size, int data_parallel_size, int ranks_per_node,
                                         std::optional<double> timeout_seconds, const std::string& transport,
                                         std::optional<double> spin_microseconds,
                                         const std::string& trace_dir, const std::string& device) {
  rankmesh::RuntimeOptions options;
  options.world_size = world_size;
  options.data_parallel_size = data_parallel_size;
  options.ranks_per_node = ranks_per_node;
  options.transport = transport;
  options.trace_dir = trace_dir;
  if (timeout_seconds) {
    if (!(*timeout_seconds > 0))
      throw rankmesh::Error(rankmesh::Errc::invalid_argument, "the timeout must be positive");
    options.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(*timeout_seconds * 1000.0 + 0.5));
  }
  if (spin_microseconds)
    options.spin = std::chrono::microseconds(static_cast<std::int64_t>(*spin_microseconds));
  // Creating a CUDA context takes a while; joining a launched world waits for the other ranks.
  py::gil_scoped_release released;
  auto devices = std::make_shared<rankmesh::python::Devices>(device, options);
  return std::make_shared<RuntimeBox>(std::move(options), std::move(devices));
}

// A call site entered and left by a Python with-block on the calling thread.
struct CallSiteScope {
  explicit CallSiteScope(std::string tag) : tag(std::move(tag)) {}
  std::string tag;
  std::optional<rankmesh::CallSite> site;
};

// The module-level graph capture of one rank (TP and PP share one side stream), entered and
// left by a Python context manager on the rank's thread.
class CaptureScope {
public:
  explicit CaptureScope(std::shared_ptr<RuntimeBox> box, int rank) : box_(std::move(box)), rank_(rank) {}

  void enter() {
    RuntimeBox::Use use(*box_);
    capture_ = std::make_unique<rankmesh::ParallelGraphCapture>(use.runtime().rank(rank_));
  }
  void exit() { capture_.reset(); }
  void synchronize(double timeout_seconds) {
    if (!capture_) throw rankmesh::Error(rankmesh::Errc::invalid_argument, "the graph capture is not active");
    py::gil_scoped_release released;
    capture_->stream().synchronize(std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::duration<double>(timeout_seconds)));
  }

private:
  std::shared_ptr<RuntimeBox> box_;
  int rank_;
  std::unique_ptr<rankmesh::ParallelGraphCapture> capture_;
};

}  // namespace

PYBIND11_MODULE(_rankmesh, module) {
  module.doc() = "rankmesh's C++ runtime (low level: use rankmesh and rankmesh.distributed).";
  module.attr("__version__") = RANKMESH_VERSION;
#if defined(RANKMESH_HAVE_CUDA)
  module.attr("_have_cuda") = true;  // built with the CUDA backend (Runtime(device="cuda"))
#else
  module.attr("_have_cuda") = false;
#endif
  rankmesh::python::watch_forks();
  rankmesh::python::register_errors(module);
  rankmesh::python::register_tensor_types(module);

  py::class_<RuntimeBox, std::shared_ptr<RuntimeBox>>(module, "Runtime",
                                                      "A process's part of the world (rankmesh::Runtime).")
      .def(py::init(&make_runtime), py::arg("world_size"), py::arg("data_parallel_size"),
           py::arg("ranks_per_node"), py::arg("timeout"), py::arg("transport"), py::arg("spin_us"),
           py::arg("trace_dir") = std::string(), py::arg("device") = std::string())
      .def_property_readonly("world_size", [](RuntimeBox& box) {
        RuntimeBox::Use use(box);
        return use.runtime().world_size();
      })
      .def_property_readonly("local_ranks", [](RuntimeBox& box) {
        RuntimeBox::Use use(box);
        return use.runtime().local_ranks();
      })
      .def_property_readonly("node_count", [](RuntimeBox& box) {
        RuntimeBox::Use use(box);
        return use.runtime().node_count();
      })
      .def_property_readonly("devices", [](RuntimeBox& box) {
        std::vector<std::string> names;
        for (rankmesh::DeviceBackend* backend : box.devices()->backends())
          names.push_back(rankmesh::to_string(backend->device()));
        return names;
      })
      .def_property_readonly("closed", &RuntimeBox::closed)
      .def("abort",
           [](RuntimeBox& box, const std::string& reason) {
             RuntimeBox::Use use(box);
             use.runtime().abort(reason);
           })
      .def("close", &RuntimeBox::close, py::call_guard<py::gil_scoped_release>());

  py::class_<CaptureScope>(module, "GraphCapture", "A rank's graph-capture scope (TP and PP).")
      .def(py::init<std::shared_ptr<RuntimeBox>, int>())
      .def("enter", &CaptureScope::enter)
      .def("exit", &CaptureScope::exit)
      .def("synchronize", &CaptureScope::synchronize, py::arg("timeout"));

  // `with rankmesh.call_site("layer3.attn"):` names the collectives this thread issues inside
  // (rankmesh/call_site.hpp); members whose sites differ fail naming both.
  py::class_<CallSiteScope>(module, "call_site",
                            "Names the collectives this thread issues inside the with-block.")
      .def(py::init<std::string>(), py::arg("tag"))
      .def("__enter__", [](CallSiteScope& scope) -> CallSiteScope& {
        scope.site.emplace(scope.tag);
        return scope;
      }, py::return_value_policy::reference)
      .def("__exit__", [](CallSiteScope& scope, py::args) { scope.site.reset(); });

  rankmesh::python::register_groups(module);
}
