// rankmesh's errors as Python exceptions: rankmesh.Error (a RuntimeError) carrying `code` (the
// stable Errc number, docs/errors.md), with subclasses to catch by kind.
#pragma once

#include <pybind11/pybind11.h>

namespace rankmesh::python {

namespace py = pybind11;

// Creates Error, TimeoutError, PeerLostError, MismatchError and InvalidArgumentError in `module`
// and translates every rankmesh::Error thrown through a binding into the matching one.
void register_errors(py::module_& module);

}  // namespace rankmesh::python
