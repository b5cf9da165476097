#include "values.hpp"

#include <Python.h>

#include <string_view>

#include "rankmesh/error.hpp"
#include "tensors.hpp"

namespace rankmesh::python {

namespace {

// A pickled value travels as a list [marker, pickle bytes]: a plain value every peer's codec
// reads. A genuine list that looks like one is pickled itself, so nothing is ambiguous.
constexpr std::string_view kPickleMarker{"\0rankmesh:pickle", 16};
// Deeper nesting (or a list that contains itself) is left to pickle, which handles cycles.
constexpr int kMaxNativeDepth = 16;

struct Pickle {
  py::object dumps, loads;
};

// Leaked: never released after finalization. Set under the GIL without a static guard (an
// import may release the GIL, and a thread blocked on a guard while holding it would deadlock).
Pickle* pickle_instance = nullptr;

Pickle& pickle() {
  if (!pickle_instance) {
    py::module_ module = py::module_::import("pickle");
    pickle_instance = new Pickle{module.attr("dumps"), module.attr("loads")};
  }
  return *pickle_instance;
}

bool is_marker(const Value& value) {
  if (!value.is<Bytes>()) return false;
  const Bytes& bytes = value.as<Bytes>();
  return std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()) == kPickleMarker;
}

bool is_pickled(const List& list) { return list.size() == 2 && is_marker(list[0]) && list[1].is<Bytes>(); }

Value pickled(py::handle object) {
  py::bytes data = pickle().dumps(object, -1);  // the highest protocol
  std::string_view view = data;
  List list;
  list.reserve(2);
  list.emplace_back(Bytes(kPickleMarker.begin(), kPickleMarker.end()));
  list.emplace_back(Bytes(view.begin(), view.end()));
  return Value(std::move(list));
}

std::optional<Value> native(py::handle object, Carry carry, int depth, const Devices& devices);

Value convert(py::handle object, Carry carry, int depth, const Devices& devices) {
  std::optional<Value> value = native(object, carry, depth, devices);
  return value ? std::move(*value) : pickled(object);
}

// Lists hold plain values only (the codec's rule): one holding a dict or a tensor is pickled.
std::optional<Value> native_list(py::handle object, int depth, const Devices& devices) {
  const Py_ssize_t n = PyList_GET_SIZE(object.ptr());
  List list;
  list.reserve(static_cast<std::size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    py::handle item = PyList_GET_ITEM(object.ptr(), i);
    if (PyDict_Check(item.ptr())) return std::nullopt;
    std::optional<Value> value = native(item, Carry::object, depth + 1, devices);
    if (!value || value->is<Tensor>()) return std::nullopt;
    list.push_back(std::move(*value));
  }
  if (is_pickled(list)) return std::nullopt;
  return Value(std::move(list));
}

std::optional<Value> native_dict(py::handle object, int depth, const Devices& devices) {
  TensorDict dict;
  dict.reserve(static_cast<std::size_t>(PyDict_GET_SIZE(object.ptr())));
  PyObject *key, *item;
  Py_ssize_t position = 0;
  while (PyDict_Next(object.ptr(), &position, &key, &item)) {
    if (!PyUnicode_CheckExact(key)) return std::nullopt;
    Py_ssize_t size = 0;
    const char* text = PyUnicode_AsUTF8AndSize(key, &size);
    if (!text) {  // not encodable as UTF-8 (lone surrogates): pickle keeps it exact
      PyErr_Clear();
      return std::nullopt;
    }
    dict.try_emplace(std::string(text, static_cast<std::size_t>(size)),
                     convert(item, Carry::dict_value, depth + 1, devices));
  }
  return Value(std::move(dict));
}

// The value as the codec carries it, or nullopt when only pickle keeps it exact.
std::optional<Value> native(py::handle object, Carry carry, int depth, const Devices& devices) {
  PyObject* o = object.ptr();
  if (depth > kMaxNativeDepth) return std::nullopt;
  if (o == Py_None) return Value(None{});
  if (PyBool_Check(o)) return Value(o == Py_True);
  if (PyLong_CheckExact(o)) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow) return std::nullopt;
    return Value(static_cast<std::int64_t>(v));
  }
  if (PyFloat_CheckExact(o)) return Value(PyFloat_AS_DOUBLE(o));
  if (PyUnicode_CheckExact(o)) {
    Py_ssize_t size = 0;
    const char* text = PyUnicode_AsUTF8AndSize(o, &size);
    if (!text) {
      PyErr_Clear();
      return std::nullopt;
    }
    return Value(std::string(text, static_cast<std::size_t>(size)));
  }
  if (PyBytes_CheckExact(o)) {
    const auto* data = reinterpret_cast<const std::uint8_t*>(PyBytes_AS_STRING(o));
    return Value(Bytes(data, data + PyBytes_GET_SIZE(o)));
  }
  if (PyList_CheckExact(o)) return native_list(object, depth, devices);
  if (carry == Carry::object) return std::nullopt;  // objects: no dicts, no tensors
  if (PyDict_CheckExact(o)) return native_dict(object, depth, devices);
  if (is_tensor_like(object)) return Value(tensor_from_python(object, "a tensor dict value", devices));
  return std::nullopt;
}

}  // namespace

Value value_from_python(py::handle object, Carry carry, const Devices& devices) {
  return convert(object, carry, 0, devices);
}

TensorDict dict_from_python(py::handle dict, const char* what, const Devices& devices) {
  if (!PyDict_Check(dict.ptr()))
    throw Error(Errc::invalid_argument,
                std::string(what) + ": expected a dict, got " +
                    std::string(py::str(py::type::handle_of(dict).attr("__name__"))));
  TensorDict result;
  result.reserve(static_cast<std::size_t>(PyDict_GET_SIZE(dict.ptr())));
  PyObject *key, *item;
  Py_ssize_t position = 0;
  while (PyDict_Next(dict.ptr(), &position, &key, &item)) {
    Py_ssize_t size = 0;
    const char* text = PyUnicode_Check(key) ? PyUnicode_AsUTF8AndSize(key, &size) : nullptr;
    if (!text) {
      PyErr_Clear();
      throw Error(Errc::invalid_argument,
                  std::string(what) + ": keys must be str (UTF-8), got " +
                      std::string(py::str(py::type::handle_of(key).attr("__name__"))));
    }
    result.try_emplace(std::string(text, static_cast<std::size_t>(size)), convert(item, Carry::dict_value, 1, devices));
  }
  return result;
}

py::object value_to_python(Value&& value, const std::shared_ptr<Devices>& devices) {
  return std::visit(
      [&devices](auto&& v) -> py::object {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, None>) {
          return py::none();
        } else if constexpr (std::is_same_v<T, bool>) {
          return py::bool_(v);
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          return py::int_(v);
        } else if constexpr (std::is_same_v<T, double>) {
          return py::float_(v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return py::str(v);
        } else if constexpr (std::is_same_v<T, Bytes>) {
          return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
        } else if constexpr (std::is_same_v<T, List>) {
          if (is_pickled(v)) {
            const Bytes& data = v[1].template as<Bytes>();
            return pickle().loads(py::bytes(reinterpret_cast<const char*>(data.data()), data.size()));
          }
          py::list list(v.size());
          for (std::size_t i = 0; i < v.size(); ++i) list[i] = value_to_python(std::move(v[i]), devices);
          return list;
        } else if constexpr (std::is_same_v<T, TensorDict>) {
          return dict_to_python(std::move(v), devices);
        } else {
          return tensor_to_python(std::move(v), devices);
        }
      },
      std::move(value.v));
}

py::object dict_to_python(TensorDict&& dict, const std::shared_ptr<Devices>& devices) {
  py::dict result;
  for (const auto& entry : dict) {
    // Entries are only read through const iterators; the values are moved out by a const_cast
    // because the dict is consumed here and never read again.
    auto& value = const_cast<Value&>(entry.value);
    py::object key = py::reinterpret_steal<py::object>(
        PyUnicode_FromStringAndSize(entry.key.data(), static_cast<Py_ssize_t>(entry.key.size())));
    if (!key) throw py::error_already_set();
    py::object item = value_to_python(std::move(value), devices);
    if (PyDict_SetItem(result.ptr(), key.ptr(), item.ptr()) != 0) throw py::error_already_set();
  }
  return result;
}

}  // namespace rankmesh::python
