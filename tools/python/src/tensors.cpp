#include "tensors.hpp"

#include <Python.h>

#include <array>
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
  py::object torch_from_dlpack, torch_bool;
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

// Takes ownership of the capsule's tensor and wraps its memory.
Tensor import_capsule(const py::object& capsule, bool as_bool, const char* what) {
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), kDLTensorCapsule));
  if (!managed) throw py::error_already_set();
  PyCapsule_SetName(capsule.ptr(), kUsedDLTensorCapsule);  // ours now: released below or by the Tensor
  const DLTensor& t = managed->dl_tensor;
  auto refuse = [&](const std::string& why) {
    if (managed->deleter) managed->deleter(managed);  // the GIL is held here
    throw Error(Errc::invalid_argument, std::string(what) + ": " + why);
  };
  if (t.device.device_type != kDLCPU && t.device.device_type != kDLCUDAHost)
    refuse("only host tensors cross the Python boundary for now (DLPack device type " +
           std::to_string(t.device.device_type) + ")");
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
  return Tensor::wrap(data, shape, *dtype, Device{}, [managed](void*) { release_managed(managed); });
}

// `object.name()`, without building an argument tuple (this runs per tensor per message).
py::object call_method(const py::object& object, const py::str& name) {
  PyObject* result = PyObject_CallMethodNoArgs(object.ptr(), name.ptr());
  if (!result) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(result);
}

// A torch tensor read through its attributes: cheaper than a DLPack export, which builds a
// view per tensor (half of the Python send path's cost). The Tensor holds a reference to the
// contiguous torch tensor, dropped with the GIL taken.
Tensor wrap_torch(const Interop& io, py::object tensor, const char* what) {
  py::object dtype_object = tensor.attr(io.dtype_name);
  std::optional<DType> dtype;
  for (const auto& [known, code] : io.torch_dtypes)
    if (dtype_object.is(known)) dtype = code;
  if (!dtype)
    throw Error(Errc::invalid_argument, std::string(what) + ": unsupported dtype " +
                                            std::string(py::str(dtype_object)));
  if (!tensor.attr(io.is_cpu_name).cast<bool>())
    throw Error(Errc::invalid_argument,
                std::string(what) + ": only host tensors cross the Python boundary for now (a " +
                    std::string(py::str(tensor.attr("device"))) + " tensor)");
  if (!call_method(tensor, io.is_contiguous_name).cast<bool>()) tensor = call_method(tensor, io.contiguous_name);
  Shape shape;
  py::tuple dims = tensor.attr(io.shape_name);
  if (dims.size() > static_cast<std::size_t>(Shape::kMaxRank))
    throw Error(Errc::invalid_argument, std::string(what) + ": " + std::to_string(dims.size()) +
                                            " dimensions; at most " + std::to_string(Shape::kMaxRank));
  for (py::handle dim : dims) shape.push_back(dim.cast<std::int64_t>());
  void* data = reinterpret_cast<void*>(call_method(tensor, io.data_ptr_name).cast<std::uintptr_t>());
  PyObject* owner = tensor.release().ptr();  // the reference the Tensor holds
  return Tensor::wrap(data, shape, *dtype, Device{}, [owner](void*) { release_object(owner); });
}

// A rankmesh Tensor lent to a DLPack consumer, in one allocation.
struct Exported {
  DLManagedTensor managed{};
  Tensor tensor;
  std::array<std::int64_t, Shape::kMaxRank> shape{};
};

alignas(64) std::byte empty_tensor_data[64];  // where zero-element tensors point

void delete_exported(DLManagedTensor* managed) { delete static_cast<Exported*>(managed->manager_ctx); }

void destroy_unconsumed_capsule(PyObject* capsule) {
  if (!PyCapsule_IsValid(capsule, kDLTensorCapsule)) return;  // consumed: the consumer releases it
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, kDLTensorCapsule));
  managed->deleter(managed);
}

py::object export_capsule(Tensor tensor) {
  auto* exported = new Exported;
  exported->tensor = std::move(tensor);
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
  dl.device = {kDLCPU, 0};
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

// numpy's from_dlpack takes an object with __dlpack__ and __dlpack_device__.
struct Buffer {
  Tensor tensor;
};

}  // namespace

bool is_tensor_like(py::handle object) {
  Interop& io = interop();
  return is_instance(object, io.torch_tensor_type) || is_instance(object, io.ndarray_type) ||
         py::hasattr(object, "__dlpack__");
}

Tensor tensor_from_python(py::handle object, const char* what) {
  Interop& io = interop();
  py::object source = py::reinterpret_borrow<py::object>(object);
  bool as_bool = false;
  py::object capsule;
  if (is_instance(object, io.torch_tensor_type)) {
    return wrap_torch(io, std::move(source), what);
  } else if (is_instance(object, io.ndarray_type)) {
    if (source.attr("dtype").attr("kind").cast<std::string>() == "b") {
      as_bool = true;
      source = source.attr("view")(io.numpy_uint8);
    }
    if (!source.attr("flags").attr("c_contiguous").cast<bool>())
      source = io.numpy_ascontiguousarray(source);
    capsule = source.attr("__dlpack__")();
  } else if (py::hasattr(object, "__dlpack__")) {
    capsule = source.attr("__dlpack__")();
  } else {
    throw Error(Errc::invalid_argument,
                std::string(what) + ": expected a tensor (torch, numpy or any object with "
                                    "__dlpack__), got " +
                    std::string(py::str(py::type::handle_of(object).attr("__name__"))));
  }
  return import_capsule(capsule, as_bool, what);
}

py::object tensor_to_python(Tensor tensor) {
  Interop& io = interop();
  const bool as_bool = tensor.dtype() == DType::boolean;
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
  py::class_<Buffer>(module, "_Buffer", "A rankmesh buffer lent to numpy through DLPack.")
      .def(py::init<>())
      .def("__dlpack__", [](Buffer& self, py::object /*stream*/) { return export_capsule(self.tensor); },
           py::arg("stream") = py::none())
      .def("__dlpack_device__", [](const Buffer&) { return py::make_tuple(int{kDLCPU}, 0); });
}

}  // namespace rankmesh::python
