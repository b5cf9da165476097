// Tensors across the Python boundary, without copies: anything with __dlpack__ (torch tensors,
// numpy arrays) becomes a rankmesh Tensor wrapping its memory, and a rankmesh Tensor becomes a
// torch tensor (a numpy array when torch is not importable) wrapping rankmesh's buffer. CUDA
// tensors cross in stream order through DLPack's stream protocol (Devices).
#pragma once

#include <pybind11/pybind11.h>

#include <memory>

#include "devices.hpp"
#include "rankmesh/tensor.hpp"

namespace rankmesh::python {

namespace py = pybind11;

// torch tensors, numpy arrays, and any other object with __dlpack__.
bool is_tensor_like(py::handle object);

// Wraps `object`'s memory. The Tensor keeps the object alive (through its DLPack capsule) until
// the last copy of the Tensor is gone; that release takes the GIL. bool travels as a uint8 view
// (torch 1.13 and numpy 1.24 refuse bool through DLPack) and is marked boolean again here; a
// non-contiguous tensor is wrapped as a contiguous copy, as torch.distributed sends it. Host
// memory, and CUDA memory of a device `devices` has a backend for: the producer orders its work
// before the calling thread's current stream there (__dlpack__(stream=...)), and the Tensor's
// ready event is recorded on that stream. Error(invalid_argument) naming `what` for anything else.
Tensor tensor_from_python(py::handle object, const char* what, const Devices& devices);

// A torch tensor (numpy array without torch) over `tensor`'s memory, which it keeps alive. A
// CUDA tensor goes through torch.utils.dlpack.from_dlpack, so that torch's current stream waits
// for it (Devices::order_consumer); it needs torch.
py::object tensor_to_python(Tensor tensor, const std::shared_ptr<Devices>& devices);

// The _Buffer class numpy and torch import through (their from_dlpack take an object with
// __dlpack__ and __dlpack_device__, which is where a consumer passes its stream).
void register_tensor_types(py::module_& module);

}  // namespace rankmesh::python
