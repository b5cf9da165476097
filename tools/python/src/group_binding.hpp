// The bindings of one rank's state (ParallelState) and its groups (GroupCoordinator) as the
// low-level classes State, Group and Handle; rankmesh.distributed wraps them in vLLM's names.
#pragma once

#include <pybind11/pybind11.h>

namespace rankmesh::python {

namespace py = pybind11;

void register_groups(py::module_& module);

}  // namespace rankmesh::python
