// Tensors across the Python boundary, without copies: anything with __dlpack__ (torch tensors,
// numpy arrays) becomes a rankmesh Tensor wrapping its memory, and a rankmesh Tensor becomes a
// torch tensor (a numpy array when torch is not importable) wrapping rankmesh's buffer.
#pragma once

#include <pybind11/pybind11.h>

#include "rankmesh/tensor.hpp"

namespace rankmesh::python {

namespace py = pybind11;

// torch tensors, numpy arrays, and any other object with __dlpack__.
bool is_tensor_like(py::handle object);

// Wraps `object`'s memory. The Tensor keeps the object alive (through its DLPack capsule) until
// the last copy of the Tensor is gone; that release takes the GIL. bool travels as a uint8 view
// (torch 1.13 and numpy 1.24 refuse bool through DLPack) and is marked boolean again here; a
// non-contiguous tensor is wrapped as a contiguous copy, as torch.distributed sends it. Host
// memory only. Error(invalid_argument) naming `what` for anything else.
Tensor tensor_from_python(py::handle object, const char* what);

// A torch tensor (numpy array without torch) over `tensor`'s memory, which it keeps alive.
py::object tensor_to_python(Tensor tensor);

// The _Buffer class numpy imports through (numpy's from_dlpack wants an object, not a capsule).
void register_tensor_types(py::module_& module);

}  // namespace rankmesh::python
