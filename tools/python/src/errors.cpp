#include "errors.hpp"

#include <Python.h>

#include "rankmesh/error.hpp"

namespace rankmesh::python {

namespace {

struct ErrorTypes {
  PyObject* error = nullptr;             // rankmesh.Error(RuntimeError)
  PyObject* timeout = nullptr;           // rankmesh.TimeoutError(Error, builtins.TimeoutError)
  PyObject* peer_lost = nullptr;         // rankmesh.PeerLostError(Error)
  PyObject* mismatch = nullptr;          // rankmesh.MismatchError(Error)
  PyObject* invalid_argument = nullptr;  // rankmesh.InvalidArgumentError(Error, ValueError)
};

ErrorTypes types;  // owned by the module (added to it); the module outlives every translation

PyObject* make_type(py::module_& module, const char* name, const char* doc, py::tuple bases) {
  const std::string qualified = std::string("rankmesh.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (!type) throw py::error_already_set();
  module.add_object(name, py::reinterpret_borrow<py::object>(type));
  return type;
}

PyObject* type_for(Errc code) {
  switch (code) {
    case Errc::timeout: return types.timeout;
    case Errc::peer_failed: return types.peer_lost;
    case Errc::mismatch: return types.mismatch;
    case Errc::invalid_argument: return types.invalid_argument;
    default: return types.error;
  }
}

void raise(const Error& e) {
  PyObject* type = type_for(e.code());
  py::object instance = py::reinterpret_borrow<py::object>(type)(py::str(e.what()));
  instance.attr("code") = static_cast<int>(e.code());
  PyErr_SetObject(type, instance.ptr());
}

}  // namespace

void register_errors(py::module_& module) {
  types.error = make_type(module, "Error",
                          "A rankmesh failure; `code` is its stable number (docs/errors.md).",
                          py::make_tuple(py::handle(PyExc_RuntimeError)));
  py::handle error(types.error);
  types.timeout = make_type(module, "TimeoutError", "An operation did not finish within its timeout.",
                            py::make_tuple(error, py::handle(PyExc_TimeoutError)));
  types.peer_lost = make_type(module, "PeerLostError",
                              "A peer died, froze or closed its connection, or the world was aborted.",
                              py::make_tuple(error));
  types.mismatch = make_type(module, "MismatchError",
                             "Ranks disagree: another operation, shape, dtype or configuration.",
                             py::make_tuple(error));
  types.invalid_argument = make_type(module, "InvalidArgumentError",
                                     "An argument rankmesh cannot use.",
                                     py::make_tuple(error, py::handle(PyExc_ValueError)));
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const Error& e) {
      raise(e);
    }
  });
}

}  // namespace rankmesh::python
