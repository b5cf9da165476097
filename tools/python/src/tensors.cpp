#include "tensors.hpp"

#include <Python.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>
#include <string>

#include "dlpack_abi.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh::python {

namespace {

// The Python objects the conversions use, looked up once, on first use (with the GIL held; no
// static guard, as an import may release the GIL: two threads may both look up, harmlessly).
// Leaked on purpose: they must not be released after the interpreter has finalized.
struct Interop {
  PyObject* torch_tensor_type = nullptr;  // null when torch is not importable
  py::object torch_from_dlpack, torch_bool, torch_uint8;
  py::object torch_from_dlpack_protocol;  // torch.utils.dlpack.from_dlpack: passes torch's stream
  std::vector<std::pair<py::object, DType>> torch_dtypes;  // torch.float32 -> f32, ...
  // Attribute names, interned once: a torch tensor is read through them on every send.
  py::str dtype_name{"dtype"}, is_cpu_name{"is_cpu"}, is_contiguous_name{"is_contiguous"},
      contiguous_name{"contiguous"}, data_ptr_name{"data_ptr"}, shape_name{"shape"};
  PyObject* ndarray_type = nullptr;  // null when numpy is not importable
  py::object numpy_from_dlpack, numpy_ascontiguousarray, numpy_bool, numpy_uint8;
  py::object buffer_type;  // _Buffer
};

Interop* interop_instance = nullptr;

Interop& interop() {
  if (interop_instance) return *interop_instance;
  auto* io = new Interop;
  try {
    py::module_ torch = py::module_::import("torch");
    io->torch_tensor_type = torch.attr("Tensor").ptr();
    io->torch_from_dlpack = torch.attr("_C").attr("_from_dlpack");
    io->torch_bool = torch.attr("bool");
    io->torch_uint8 = torch.attr("uint8");
    io->torch_from_dlpack_protocol = py::module_::import("torch.utils.dlpack").attr("from_dlpack");
    for (auto [name, dtype] : {std::pair{"float32", DType::f32}, {"float16", DType::f16},
                               {"bfloat16", DType::bf16}, {"float64", DType::f64}, {"int8", DType::i8},
                               {"int16", DType::i16}, {"int32", DType::i32}, {"int64", DType::i64},
                               {"uint8", DType::u8}, {"bool", DType::boolean}})
      io->torch_dtypes.emplace_back(torch.attr(name), dtype);
  } catch (const py::error_already_set&) {
    io->torch_tensor_type = nullptr;  // numpy arrays come back instead
  }
  try {
    py::module_ numpy = py::module_::import("numpy");
    io->ndarray_type = numpy.attr("ndarray").ptr();
    io->numpy_from_dlpack = numpy.attr("from_dlpack");
    io->numpy_ascontiguousarray = numpy.attr("ascontiguousarray");
    io->numpy_bool = numpy.attr("bool_");
    io->numpy_uint8 = numpy.attr("uint8");
  } catch (const py::error_already_set&) {
    io->ndarray_type = nullptr;
  }
  io->buffer_type = py::module_::import("rankmesh._rankmesh").attr("_Buffer");
  interop_instance = io;
  return *io;
}

bool is_instance(py::handle object, PyObject* type) {
  return type && PyObject_TypeCheck(object.ptr(), reinterpret_cast<PyTypeObject*>(type));
}

// Runs a DLPack producer's deleter; it may touch Python objects (numpy's does), so it takes
// the GIL — unless the interpreter is gone, when the memory is left to the process's end.
void release_managed(DLManagedTensor* managed) noexcept {
  if (!managed->deleter) return;
  if (!Py_IsInitialized() || _Py_IsFinalizing()) return;
  PyGILState_STATE state = PyGILState_Ensure();
  managed->deleter(managed);
  PyGILState_Release(state);
}

// Drops a reference a Tensor held, taking the GIL (as release_managed).
void release_object(PyObject* object) noexcept {
  if (!Py_IsInitialized() || _Py_IsFinalizing()) return;
  PyGILState_STATE state = PyGILState_Ensure();
  Py_DECREF(object);
  PyGILState_Release(state);
}

std::optional<DType> dtype_from_dlpack(DLDataType type) {
  if (type.lanes != 1) return std::nullopt;
  switch (type.code) {
    case kDLFloat:
      if (type.bits == 64) return DType::f64;
      if (type.bits == 32) return DType::f32;
      if (type.bits == 16) return DType::f16;
      return std::nullopt;
    case kDLBfloat: return type.bits == 16 ? std::optional(DType::bf16) : std::nullopt;
    case kDLInt:
      if (type.bits == 64) return DType::i64;
      if (type.bits == 32) return DType::i32;
      if (type.bits == 16) return DType::i16;
      if (type.bits == 8) return DType::i8;
      return std::nullopt;
    case kDLUInt: return type.bits == 8 ? std::optional(DType::u8) : std::nullopt;
    case kDLBool: return type.bits == 8 ? std::optional(DType::boolean) : std::nullopt;
    default: return std::nullopt;
  }
}

// How `dtype` is exported: bool as uint8 (the importers refuse bool), then viewed back.
DLDataType dlpack_type(DType dtype) {
  switch (dtype) {
    case DType::f64: return {kDLFloat, 64, 1};
    case DType::f32: return {kDLFloat, 32, 1};
    case DType::f16: return {kDLFloat, 16, 1};
    case DType::bf16: return {kDLBfloat, 16, 1};
    case DType::i64: return {kDLInt, 64, 1};
    case DType::i32: return {kDLInt, 32, 1};
    case DType::i16: return {kDLInt, 16, 1};
    case DType::i8: return {kDLInt, 8, 1};
    case DType::u8:
    case DType::boolean: return {kDLUInt, 8, 1};
    default:
      throw Error(Errc::invalid_argument, std::string("a ") + to_string(dtype) +
                                              " tensor cannot be handed to Python: torch 1.13 "
                                              "and numpy have no such dtype");
  }
}

bool compact(const DLTensor& t) {
  if (!t.strides) return true;
  std::int64_t expected = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    if (t.shape[i] == 0) return true;  // no elements: any strides
    if (t.shape[i] != 1 && t.strides[i] != expected) return false;
    expected *= t.shape[i];
  }
  return true;
}

// Takes ownership of the capsule's tensor and wraps its memory, which must be on `device` (the
// host: CPU or CUDA-pinned memory; CUDA: that device), as the producer's __dlpack_device__ said.
Tensor import_capsule(const py::object& capsule, bool as_bool, const char* what, Device device) {
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), kDLTensorCapsule));
  if (!managed) throw py::error_already_set();
  PyCapsule_SetName(capsule.ptr(), kUsedDLTensorCapsule);  // ours now: released below or by the Tensor
  const DLTensor& t = managed->dl_tensor;
  auto refuse = [&](const std::string& why) {
    if (managed->deleter) managed->deleter(managed);  // the GIL is held here
    throw Error(Errc::invalid_argument, std::string(what) + ": " + why);
  };
  const bool expected = device.type == DeviceType::cuda
                            ? t.device.device_type == kDLCUDA && t.device.device_id == device.index
                            : t.device.device_type == kDLCPU || t.device.device_type == kDLCUDAHost;
  if (!expected)
    refuse("the producer's DLPack tensor is on device type " + std::to_string(t.device.device_type) +
           " id " + std::to_string(t.device.device_id) + ", not on " + to_string(device) +
           (device.type == DeviceType::cpu ? " (a CUDA tensor must report its device through "
                                             "__dlpack_device__, so that it is asked for its stream)"
                                           : std::string(", as its __dlpack_device__ said")));
  std::optional<DType> dtype = dtype_from_dlpack(t.dtype);
  if (!dtype)
    refuse("unsupported dtype (DLPack code " + std::to_string(t.dtype.code) + ", " +
           std::to_string(t.dtype.bits) + " bits, " + std::to_string(t.dtype.lanes) + " lanes)");
  if (as_bool) dtype = DType::boolean;
  if (t.ndim > Shape::kMaxRank)
    refuse(std::to_string(t.ndim) + " dimensions; at most " + std::to_string(Shape::kMaxRank));
  if (!compact(t)) refuse("the tensor's memory is not contiguous");
  Shape shape;
  for (int i = 0; i < t.ndim; ++i) shape.push_back(t.shape[i]);
  void* data = static_cast<char*>(t.data) + t.byte_offset;
  if (!t.data) data = nullptr;
  return Tensor::wrap(data, shape, *dtype, device, [managed](void*) { release_managed(managed); });
}

// `object.name()`, without building an argument tuple (this runs per tensor per message).
py::object call_method(const py::object& object, const py::str& name) {
  PyObject* result = PyObject_CallMethodNoArgs(object.ptr(), name.ptr());
  if (!result) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(result);
}

// A torch tensor's dtype; Error(invalid_argument) naming `what` for one rankmesh lacks.
DType torch_dtype(const Interop& io, const py::object& tensor, const char* what) {
  py::object dtype_object = tensor.attr(io.dtype_name);
  for (const auto& [known, code] : io.torch_dtypes)
    if (dtype_object.is(known)) return code;
  throw Error(Errc::invalid_argument, std::string(what) + ": unsupported dtype " +
                                          std::string(py::str(dtype_object)));
}

// A host torch tensor read through its attributes: cheaper than a DLPack export, which builds
// a view per tensor (half of the Python send path's cost). The Tensor holds a reference to the
// contiguous torch tensor, dropped with the GIL taken.
Tensor wrap_torch(const Interop& io, py::object tensor, const char* what) {
  const DType dtype = torch_dtype(io, tensor, what);
  if (!call_method(tensor, io.is_contiguous_name).cast<bool>()) tensor = call_method(tensor, io.contiguous_name);
  Shape shape;
  py::tuple dims = tensor.attr(io.shape_name);
  if (dims.size() > static_cast<std::size_t>(Shape::kMaxRank))
    throw Error(Errc::invalid_argument, std::string(what) + ": " + std::to_string(dims.size()) +
                                            " dimensions; at most " + std::to_string(Shape::kMaxRank));
  for (py::handle dim : dims) shape.push_back(dim.cast<std::int64_t>());
  void* data = reinterpret_cast<void*>(call_method(tensor, io.data_ptr_name).cast<std::uintptr_t>());
  PyObject* owner = tensor.release().ptr();  // the reference the Tensor holds
  return Tensor::wrap(data, shape, dtype, Device{}, [owner](void*) { release_object(owner); });
}

// A torch tensor on a CUDA device, made exportable through DLPack: detached (torch refuses to
// export a tensor that requires grad; the memory is the same), contiguous, and bool viewed as
// uint8 (torch 1.13 refuses bool). Its stream is not known here: it goes through the protocol.
py::object torch_for_dlpack(const Interop& io, py::object tensor, bool& as_bool, const char* what) {
  py::object device = tensor.attr("device");
  if (device.attr("type").cast<std::string>() != "cuda")
    throw Error(Errc::invalid_argument,
                std::string(what) + ": only host and CUDA tensors cross the Python boundary (a " +
                    std::string(py::str(device)) + " tensor)");
  const DType dtype = torch_dtype(io, tensor, what);
  tensor = tensor.attr("detach")();
  if (!call_method(tensor, io.is_contiguous_name).cast<bool>()) tensor = call_method(tensor, io.contiguous_name);
  if (dtype == DType::boolean) {
    as_bool = true;
    tensor = tensor.attr("view")(io.torch_uint8);
  }
  return tensor;
}

// Asks `producer` for its tensor through DLPack and wraps it. A CUDA producer (by its
// __dlpack_device__) is asked to order its work before the calling thread's current stream on
// that device, and the Tensor carries an event recorded there after it.
Tensor import_producer(const py::object& producer, bool as_bool, const char* what, const Devices& devices) {
  Device device{};
  if (py::hasattr(producer, "__dlpack_device__")) {
    py::tuple where = producer.attr("__dlpack_device__")();
    const int type = where[0].cast<int>();
    if (type == kDLCUDA) {
      device = Device{DeviceType::cuda, where[1].cast<int>()};
    } else if (type != kDLCPU && type != kDLCUDAHost) {
      throw Error(Errc::invalid_argument,
                  std::string(what) + ": only host and CUDA tensors cross the Python boundary "
                                      "(DLPack device type " + std::to_string(type) + ")");
    }
  }
  if (device.type == DeviceType::cpu)
    return import_capsule(producer.attr("__dlpack__")(), as_bool, what, device);
  const std::intptr_t stream = devices.producer_stream(device.index, what);
  Tensor tensor = import_capsule(producer.attr("__dlpack__")(py::arg("stream") = stream), as_bool, what, device);
  tensor.set_ready_event(devices.imported_ready_event(device.index));
  return tensor;
}

// A rankmesh Tensor lent to a DLPack consumer, in one allocation.
struct Exported {
  DLManagedTensor managed{};
  Tensor tensor;
  std::array<std::int64_t, Shape::kMaxRank> shape{};
  // A CUDA tensor's: the runtime's devices and the stream its consumer named, behind which the
  // memory goes back to rankmesh when the consumer drops it.
  std::shared_ptr<Devices> devices;
  std::optional<std::intptr_t> consumer;
};

alignas(64) std::byte empty_tensor_data[64];  // where zero-element tensors point

void delete_exported(DLManagedTensor* managed) {
  std::unique_ptr<Exported> exported(static_cast<Exported*>(managed->manager_ctx));
  if (exported->devices) exported->devices->release_after_consumer(std::move(exported->tensor), exported->consumer);
}

void destroy_unconsumed_capsule(PyObject* capsule) {
  if (!PyCapsule_IsValid(capsule, kDLTensorCapsule)) return;  // consumed: the consumer releases it
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, kDLTensorCapsule));
  managed->deleter(managed);
}

py::object export_capsule(Tensor tensor, std::shared_ptr<Devices> devices = nullptr,
                          std::optional<std::intptr_t> consumer = std::nullopt) {
  auto* exported = new Exported;
  exported->tensor = std::move(tensor);
  exported->devices = std::move(devices);
  exported->consumer = consumer;
  const Tensor& t = exported->tensor;
  for (int i = 0; i < t.shape().rank(); ++i) exported->shape[static_cast<std::size_t>(i)] = t.shape()[i];
  DLTensor& dl = exported->managed.dl_tensor;
  try {
    dl.dtype = dlpack_type(t.dtype());
  } catch (...) {
    delete exported;
    throw;
  }
  dl.data = t.data() ? t.data() : static_cast<void*>(empty_tensor_data);
  dl.device = t.device().type == DeviceType::cuda ? DLDevice{kDLCUDA, t.device().index} : DLDevice{kDLCPU, 0};
  dl.ndim = t.shape().rank();
  dl.shape = exported->shape.data();
  dl.strides = nullptr;
  dl.byte_offset = 0;
  exported->managed.manager_ctx = exported;
  exported->managed.deleter = delete_exported;
  PyObject* capsule = PyCapsule_New(&exported->managed, kDLTensorCapsule, destroy_unconsumed_capsule);
  if (!capsule) {
    delete exported;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(capsule);
}

// numpy's and torch's from_dlpack take an object with __dlpack__ and __dlpack_device__.
struct Buffer {
  Tensor tensor;
  std::shared_ptr<Devices> devices;  // the runtime's: orders consumers' streams (CUDA tensors)

  py::tuple dlpack_device() const {
    const Device d = tensor.device();
    return d.type == DeviceType::cuda ? py::make_tuple(int{kDLCUDA}, d.index) : py::make_tuple(int{kDLCPU}, 0);
  }

  // DLPack's __dlpack__ (the array API's, 2023.12): `stream` is the consumer's; an unversioned
  // capsule answers any `max_version` (consumers check the version they get); no copies.
  py::object dlpack(const py::object& stream, const py::object& dl_device, const py::object& copy) {
    if (!copy.is_none() && copy.cast<bool>())
      throw py::buffer_error("rankmesh lends its buffers without copies (__dlpack__(copy=True))");
    if (!dl_device.is_none() && !dl_device.equal(dlpack_device()))
      throw py::buffer_error("rankmesh exports a buffer on its own device only (__dlpack__(dl_device=" +
                             std::string(py::str(dl_device)) + "))");
    if (tensor.device().type == DeviceType::cuda) {
      std::optional<std::intptr_t> consumer;
      if (!stream.is_none()) {
        if (!PyLong_Check(stream.ptr()))
          throw py::type_error("__dlpack__(stream=...) takes an int (a CUDA stream) or None");
        consumer = stream.cast<std::intptr_t>();
      }
      {
        py::gil_scoped_release released;  // may wait on the host for the tensor's event
        devices->order_consumer(tensor, consumer);
      }
      return export_capsule(tensor, devices, consumer);
    }
    return export_capsule(tensor);
  }
};

}  // namespace

bool is_tensor_like(py::handle object) {
  Interop& io = interop();
  return is_instance(object, io.torch_tensor_type) || is_instance(object, io.ndarray_type) ||
         py::hasattr(object, "__dlpack__");
}

Tensor tensor_from_python(py::handle object, const char* what, const Devices& devices) {
  Interop& io = interop();
  py::object source = py::reinterpret_borrow<py::object>(object);
  bool as_bool = false;
  if (is_instance(object, io.torch_tensor_type)) {
    if (source.attr(io.is_cpu_name).cast<bool>()) return wrap_torch(io, std::move(source), what);
    source = torch_for_dlpack(io, std::move(source), as_bool, what);
    return import_producer(source, as_bool, what, devices);
  } else if (is_instance(object, io.ndarray_type)) {
    if (source.attr("dtype").attr("kind").cast<std::string>() == "b") {
      as_bool = true;
      source = source.attr("view")(io.numpy_uint8);
    }
    if (!source.attr("flags").attr("c_contiguous").cast<bool>())
      source = io.numpy_ascontiguousarray(source);
    return import_capsule(source.attr("__dlpack__")(), as_bool, what, Device{});
  } else if (py::hasattr(object, "__dlpack__")) {
    return import_producer(source, as_bool, what, devices);
  } else {
    throw Error(Errc::invalid_argument,
                std::string(what) + ": expected a tensor (torch, numpy or any object with "
                                    "__dlpack__), got " +
                    std::string(py::str(py::type::handle_of(object).attr("__name__"))));
  }
}

py::object tensor_to_python(Tensor tensor, const std::shared_ptr<Devices>& devices) {
  Interop& io = interop();
  const bool as_bool = tensor.dtype() == DType::boolean;
  if (tensor.device().type == DeviceType::cuda) {
    if (!io.torch_tensor_type)
      throw Error(Errc::invalid_argument, "a received " + to_string(tensor.device()) +
                                              " tensor needs torch, which does not import");
    py::object buffer = io.buffer_type();
    Buffer& lent = buffer.cast<Buffer&>();
    lent.tensor = std::move(tensor);
    lent.devices = devices;
    py::object result = io.torch_from_dlpack_protocol(buffer);
    return as_bool ? result.attr("view")(io.torch_bool) : result;
  }
  if (io.torch_tensor_type) {
    py::object capsule = export_capsule(std::move(tensor));
    PyObject* imported = PyObject_CallOneArg(io.torch_from_dlpack.ptr(), capsule.ptr());
    if (!imported) throw py::error_already_set();
    py::object result = py::reinterpret_steal<py::object>(imported);
    return as_bool ? result.attr("view")(io.torch_bool) : result;
  }
  if (!io.ndarray_type)
    throw Error(Errc::invalid_argument, "a received tensor needs torch or numpy, and neither imports");
  py::object buffer = io.buffer_type();
  buffer.cast<Buffer&>().tensor = std::move(tensor);
  py::object result = io.numpy_from_dlpack(buffer);
  return as_bool ? result.attr("view")(io.numpy_bool) : result;
}

void register_tensor_types(py::module_& module) {
  py::class_<Buffer>(module, "_Buffer", "A rankmesh buffer lent to numpy or torch through DLPack.")
      .def(py::init<>())
      .def("__dlpack__",
           [](Buffer& self, const py::object& stream, const py::object& /*max_version*/,
              const py::object& dl_device, const py::object& copy) { return self.dlpack(stream, dl_device, copy); },
           py::arg("stream") = py::none(), py::kw_only(), py::arg("max_version") = py::none(),
           py::arg("dl_device") = py::none(), py::arg("copy") = py::none())
      .def("__dlpack_device__", &Buffer::dlpack_device);
}

}  // namespace rankmesh::python
