// Python values across the boundary. What the codec carries travels natively — None, bool, int
// within int64, float, str, bytes, lists of these, dicts with str keys (tensor dicts only) and
// tensors — so that C++ peers read it; anything else is pickled, as vLLM does, and unpickled on
// the receiver with its type. Unpickling trusts the world's members (the secret authenticates them).
#pragma once

#include <pybind11/pybind11.h>

#include <memory>

#include "devices.hpp"
#include "rankmesh/tensor_dict.hpp"

namespace rankmesh::python {

namespace py = pybind11;

// Where a value goes: into a tensor dict (nested dicts and tensors travel natively), or as an
// object (send_object, broadcast_object: the codec's plain values only).
enum class Carry { dict_value, object };

// Tensors of `devices`' devices are read as tensors.hpp says.
Value value_from_python(py::handle object, Carry carry, const Devices& devices);
// `dict` must be a dict with str keys; Error(invalid_argument) naming `what` otherwise.
TensorDict dict_from_python(py::handle dict, const char* what, const Devices& devices);

// Tensors are moved out of `value` into the Python objects that wrap them (CUDA tensors ordered
// before torch's current stream through `devices`).
py::object value_to_python(Value&& value, const std::shared_ptr<Devices>& devices);
py::object dict_to_python(TensorDict&& dict, const std::shared_ptr<Devices>& devices);

}  // namespace rankmesh::python
