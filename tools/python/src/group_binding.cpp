#include "group_binding.hpp"

#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <optional>
#include <variant>

#include "rankmesh/error.hpp"
#include "rankmesh/parallel_state.hpp"
#include "runtime_box.hpp"
#include "tensors.hpp"
#include "values.hpp"

namespace rankmesh::python {

namespace {

using Seconds = std::chrono::duration<double>;

std::chrono::nanoseconds to_nanoseconds(double seconds) {
  if (!(seconds > 0))
    throw Error(Errc::invalid_argument, "a timeout must be positive, got " + std::to_string(seconds) + " s");
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Seconds(seconds));
}

GroupKind kind_from_name(const std::string& name) {
  for (GroupKind kind : kAllGroupKinds)
    if (name == to_string(kind)) return kind;
  throw Error(Errc::invalid_argument, "no group kind '" + name + "' (world, tp, pp, dp, ep, dcp, pcp)");
}

// One rank of a runtime.
struct StateRef {
  std::shared_ptr<RuntimeBox> box;
  int rank;

  ParallelState& get(const RuntimeBox::Use& use) const { return use.runtime().rank(rank); }
};

// One group of one rank, as it was when Python got it: after destroy_model_parallel (a new
// epoch) it refuses to be used instead of reaching a group that is gone or rebuilt.
struct GroupRef {
  std::shared_ptr<RuntimeBox> box;
  int rank;
  GroupKind kind;
  std::uint64_t epoch;

  GroupCoordinator& get(const RuntimeBox::Use& use) const {
    if (kind != GroupKind::world && box->epoch(rank) != epoch)
      throw Error(Errc::not_initialized,
                  std::string("rank ") + std::to_string(rank) + ": this " + to_string(kind) +
                      " group was destroyed by destroy_model_parallel; get the group again");
    return use.runtime().rank(rank).group(kind);
  }
};

// Runs `op` on the group without the GIL (every call that may wait releases it).
template <class Op>
auto without_gil(const GroupRef& group, Op op) {
  RuntimeBox::Use use(*group.box);
  GroupCoordinator& coordinator = group.get(use);
  py::gil_scoped_release released;
  return op(coordinator);
}

template <class T>
T property(const GroupRef& group, T (*read)(const GroupCoordinator&)) {
  RuntimeBox::Use use(*group.box);
  return read(group.get(use));
}

GroupCoordinator* optional_group(const py::object& group, const RuntimeBox::Use& use) {
  if (group.is_none()) return nullptr;
  return &group.cast<const GroupRef&>().get(use);
}

AllGatherTensors all_gather_tensors_from(const py::object& map) {
  AllGatherTensors result;
  if (map.is_none()) return result;
  for (auto item : map.cast<py::dict>()) result.emplace(item.first.cast<std::string>(), item.second.cast<bool>());
  return result;
}

py::object tensor_or_none(Tensor tensor, const std::shared_ptr<Devices>& devices) {
  return tensor.defined() ? tensor_to_python(std::move(tensor), devices) : py::none();
}

// An asynchronous operation's handle: wait() gives its result (None, or the received dict)
// once, and the same object again on later waits.
class AsyncHandle {
public:
  AsyncHandle(std::variant<Handle<void>, Handle<TensorDict>> handle, std::chrono::nanoseconds timeout,
              std::shared_ptr<Devices> devices)
      : handle_(std::move(handle)), timeout_(timeout), devices_(std::move(devices)) {}

  py::object wait(std::optional<double> timeout_seconds) {
    if (result_) return *result_;
    const auto timeout = timeout_seconds ? to_nanoseconds(*timeout_seconds) : timeout_;
    if (auto* send = std::get_if<Handle<void>>(&handle_)) {
      {
        py::gil_scoped_release released;
        send->wait(timeout);
      }
      result_ = py::none();
    } else {
      TensorDict dict;
      {
        py::gil_scoped_release released;
        dict = std::get<Handle<TensorDict>>(handle_).wait(timeout);
      }
      result_ = dict_to_python(std::move(dict), devices_);
    }
    return *result_;
  }

  bool is_completed() const {
    return std::visit([](const auto& h) { return h.poll(); }, handle_);
  }

private:
  std::variant<Handle<void>, Handle<TensorDict>> handle_;
  std::chrono::nanoseconds timeout_;
  std::shared_ptr<Devices> devices_;  // the runtime's, for received CUDA tensors
  std::optional<py::object> result_;
};

void register_state(py::module_& module) {
  py::class_<StateRef>(module, "State", "One rank's parallel state (rankmesh::ParallelState).")
      .def_property_readonly("rank", [](const StateRef& s) { return s.rank; })
      .def_property_readonly("world_size", [](const StateRef& s) {
        RuntimeBox::Use use(*s.box);
        return s.get(use).world_size();
      })
      .def("initialize_model_parallel",
           [](StateRef& s, int tp, int pp, int pcp, int dcp, bool ensure) {
             RuntimeBox::Use use(*s.box);
             ParallelState& state = s.get(use);
             py::gil_scoped_release released;
             const bool was_initialized = state.model_parallel_is_initialized();
             if (ensure) {
               state.ensure_model_parallel_initialized(tp, pp, pcp, dcp);
             } else {
               state.initialize_model_parallel(tp, pp, pcp, dcp);
             }
             if (!was_initialized) s.box->advance_epoch(s.rank);
           },
           py::arg("tp"), py::arg("pp"), py::arg("pcp"), py::arg("dcp"), py::arg("ensure"))
      .def("model_parallel_is_initialized", [](StateRef& s) {
        RuntimeBox::Use use(*s.box);
        return s.get(use).model_parallel_is_initialized();
      })
      .def("destroy_model_parallel", [](StateRef& s) {
        RuntimeBox::Use use(*s.box);
        ParallelState& state = s.get(use);
        py::gil_scoped_release released;
        if (!state.model_parallel_is_initialized()) return;
        s.box->advance_epoch(s.rank);
        state.destroy_model_parallel();
      })
      .def("group", [](StateRef& s, const std::string& kind_name) {
        const GroupKind kind = kind_from_name(kind_name);
        RuntimeBox::Use use(*s.box);
        s.get(use).group(kind);  // Error(not_initialized) before initialize_model_parallel
        return GroupRef{s.box, s.rank, kind, s.box->epoch(s.rank)};
      })
      .def("is_global_first_rank", [](StateRef& s) {
        RuntimeBox::Use use(*s.box);
        return s.get(use).is_global_first_rank();
      })
      .def("is_local_first_rank", [](StateRef& s) {
        RuntimeBox::Use use(*s.box);
        return s.get(use).is_local_first_rank();
      })
      .def("abort", [](StateRef& s, const std::string& reason) {
        RuntimeBox::Use use(*s.box);
        s.get(use).abort(reason);
      })
      // Timeline traces (docs/trace.md).
      .def_property("tracing",
                    [](StateRef& s) {
                      RuntimeBox::Use use(*s.box);
                      return s.get(use).tracing();
                    },
                    [](StateRef& s, bool on) {
                      RuntimeBox::Use use(*s.box);
                      s.get(use).set_tracing(on);
                    })
      .def("flush_trace", [](StateRef& s) {
        RuntimeBox::Use use(*s.box);
        ParallelState& state = s.get(use);
        py::gil_scoped_release released;
        return state.flush_trace();
      })
      .def("dump_trace", [](StateRef& s) {
        RuntimeBox::Use use(*s.box);
        ParallelState& state = s.get(use);
        py::gil_scoped_release released;
        return state.dump_trace();
      });
}

void register_group(py::module_& module) {
  py::class_<GroupRef> group(module, "Group", "One rank's handle on one group (rankmesh::GroupCoordinator).");
  group
      .def_property_readonly("ranks", [](const GroupRef& g) {
        return property<std::vector<int>>(g, [](const GroupCoordinator& c) { return c.ranks(); });
      })
      .def_property_readonly("rank", [](const GroupRef& g) {
        return property<int>(g, [](const GroupCoordinator& c) { return c.rank(); });
      })
      .def_property_readonly("rank_in_group", [](const GroupRef& g) {
        return property<int>(g, [](const GroupCoordinator& c) { return c.rank_in_group(); });
      })
      .def_property_readonly("world_size", [](const GroupRef& g) {
        return property<int>(g, [](const GroupCoordinator& c) { return c.world_size(); });
      })
      .def_property_readonly("local_rank", [](const GroupRef& g) {
        return property<int>(g, [](const GroupCoordinator& c) { return c.local_rank(); });
      })
      .def_property_readonly("unique_name", [](const GroupRef& g) {
        return property<std::string>(g, [](const GroupCoordinator& c) { return c.unique_name(); });
      })
      .def_property_readonly("failure", [](const GroupRef& g) {
        return property<std::string>(g, [](const GroupCoordinator& c) { return c.failure(); });
      })
      .def_property(
          "timeout",
          [](const GroupRef& g) {
            return property<double>(g, [](const GroupCoordinator& c) {
              return std::chrono::duration_cast<Seconds>(c.timeout()).count();
            });
          },
          [](GroupRef& g, double seconds) {
            RuntimeBox::Use use(*g.box);
            g.get(use).set_timeout(to_nanoseconds(seconds));
          })
      .def("abort", [](GroupRef& g, const std::string& reason) {
        RuntimeBox::Use use(*g.box);
        use.runtime().rank(g.rank).abort(reason);
      });

  // --- objects
  group
      .def("send_object",
           [](GroupRef& g, py::handle object, int dst) {
             Value value = value_from_python(object, Carry::object, *g.box->devices());
             without_gil(g, [&](GroupCoordinator& c) { c.send_object(value, dst); });
           })
      .def("recv_object",
           [](GroupRef& g, int src) {
             return value_to_python(
                 without_gil(g, [&](GroupCoordinator& c) { return c.recv_object(src); }),
                 g.box->devices());
           })
      .def("broadcast_object", [](GroupRef& g, py::handle object, int src) {
        Value value = value_from_python(object, Carry::object, *g.box->devices());
        return value_to_python(
            without_gil(g, [&](GroupCoordinator& c) { return c.broadcast_object(value, src); }),
            g.box->devices());
      });

  // --- tensor dicts
  group
      .def("send_tensor_dict",
           [](GroupRef& g, py::handle dict, std::optional<int> dst, py::object all_gather_group,
              py::object all_gather_tensors, bool donate) {
             TensorDict tensors = dict_from_python(dict, "send_tensor_dict", *g.box->devices());
             const AllGatherTensors slicing = all_gather_tensors_from(all_gather_tensors);
             RuntimeBox::Use use(*g.box);
             GroupCoordinator& c = g.get(use);
             GroupCoordinator* gather_group = optional_group(all_gather_group, use);
             py::gil_scoped_release released;
             if (donate) {
               c.send_tensor_dict(std::move(tensors), dst, gather_group, slicing);
             } else {
               c.send_tensor_dict(tensors, dst, gather_group, slicing);
             }
           })
      .def("recv_tensor_dict",
           [](GroupRef& g, std::optional<int> src, py::object all_gather_group,
              py::object all_gather_tensors, py::object into) {
             const AllGatherTensors slicing = all_gather_tensors_from(all_gather_tensors);
             RecvInto buffers;
             if (!into.is_none())
               for (auto item : into.cast<py::dict>())
                 buffers.emplace(item.first.cast<std::string>(),
                                 tensor_from_python(item.second, "recv into", *g.box->devices()));
             TensorDict received;
             {
               RuntimeBox::Use use(*g.box);
               GroupCoordinator& c = g.get(use);
               GroupCoordinator* gather_group = optional_group(all_gather_group, use);
               py::gil_scoped_release released;
               received = c.recv_tensor_dict(src, gather_group, slicing, buffers);
             }
             return dict_to_python(std::move(received), g.box->devices());
           })
      .def("broadcast_tensor_dict",
           [](GroupRef& g, py::handle dict, int src) {
             TensorDict tensors = dict.is_none() ? TensorDict{}
                                                 : dict_from_python(dict, "broadcast_tensor_dict", *g.box->devices());
             return dict_to_python(
                 without_gil(g, [&](GroupCoordinator& c) { return c.broadcast_tensor_dict(tensors, src); }),
                 g.box->devices());
           })
      .def("isend_tensor_dict",
           [](GroupRef& g, py::handle dict, std::optional<int> dst, py::object all_gather_group,
              py::object all_gather_tensors, bool donate) {
             TensorDict tensors = dict_from_python(dict, "isend_tensor_dict", *g.box->devices());
             AllGatherTensors slicing = all_gather_tensors_from(all_gather_tensors);
             RuntimeBox::Use use(*g.box);
             GroupCoordinator& c = g.get(use);
             GroupCoordinator* gather_group = optional_group(all_gather_group, use);
             // The operation owns the dict (and through it the Python tensors) until it has run;
             // only a donating caller lets an in-process receiver share the memory.
             Handle<void> handle = c.async(
                 [tensors = std::move(tensors), dst, gather_group, slicing = std::move(slicing), donate](
                     GroupCoordinator& group) mutable {
                   if (donate) {
                     group.send_tensor_dict(std::move(tensors), dst, gather_group, slicing);
                   } else {
                     group.send_tensor_dict(tensors, dst, gather_group, slicing);
                   }
                 });
             return AsyncHandle(std::move(handle), c.timeout(), g.box->devices());
           })
      .def("irecv_tensor_dict",
           [](GroupRef& g, std::optional<int> src, py::object all_gather_group, py::object all_gather_tensors) {
             AllGatherTensors slicing = all_gather_tensors_from(all_gather_tensors);
             RuntimeBox::Use use(*g.box);
             GroupCoordinator& c = g.get(use);
             GroupCoordinator* gather_group = optional_group(all_gather_group, use);
             Handle<TensorDict> handle = c.async(
                 [src, gather_group, slicing = std::move(slicing)](GroupCoordinator& group) {
                   return group.recv_tensor_dict(src, gather_group, slicing);
                 });
             return AsyncHandle(std::move(handle), c.timeout(), g.box->devices());
           });

  // --- collectives
  group
      .def("all_reduce",
           [](GroupRef& g, py::handle input) {
             Tensor t = tensor_from_python(input, "all_reduce input", *g.box->devices());
             return tensor_to_python(
                 without_gil(g, [&](GroupCoordinator& c) { return c.all_reduce(t); }),
                 g.box->devices());
           })
      .def("all_gather",
           [](GroupRef& g, py::handle input, int dim) {
             Tensor t = tensor_from_python(input, "all_gather input", *g.box->devices());
             return tensor_to_python(
                 without_gil(g, [&](GroupCoordinator& c) { return c.all_gather(t, dim); }),
                 g.box->devices());
           })
      .def("all_gatherv",
           [](GroupRef& g, py::handle input, int dim) {
             Tensor t = tensor_from_python(input, "all_gatherv input", *g.box->devices());
             return tensor_to_python(
                 without_gil(g, [&](GroupCoordinator& c) { return c.all_gatherv(t, dim); }),
                 g.box->devices());
           })
      .def("reduce_scatter",
           [](GroupRef& g, py::handle input, int dim) {
             Tensor t = tensor_from_python(input, "reduce_scatter input", *g.box->devices());
             return tensor_to_python(
                 without_gil(g, [&](GroupCoordinator& c) { return c.reduce_scatter(t, dim); }),
                 g.box->devices());
           })
      .def("reduce_scatterv",
           [](GroupRef& g, py::handle input, std::vector<std::int64_t> sizes, int dim) {
             Tensor t = tensor_from_python(input, "reduce_scatterv input", *g.box->devices());
             return tensor_to_python(
                 without_gil(g, [&](GroupCoordinator& c) { return c.reduce_scatterv(t, sizes, dim); }),
                 g.box->devices());
           })
      .def("gather",
           [](GroupRef& g, py::handle input, int dst, int dim) {
             Tensor t = tensor_from_python(input, "gather input", *g.box->devices());
             return tensor_or_none(without_gil(g, [&](GroupCoordinator& c) { return c.gather(t, dst, dim); }),
                                   g.box->devices());
           })
      .def("broadcast",  // in place: the wrapped memory is the caller's tensor
           [](GroupRef& g, py::handle tensor, int src) {
             Tensor t = tensor_from_python(tensor, "broadcast tensor", *g.box->devices());
             without_gil(g, [&](GroupCoordinator& c) { c.broadcast(t, src); });
           })
      .def("barrier", [](GroupRef& g) { without_gil(g, [](GroupCoordinator& c) { c.barrier(); }); })
      .def("all_to_all", [](GroupRef& g, py::handle input, std::vector<std::int64_t> send_counts) {
        Tensor t = tensor_from_python(input, "all_to_all input", *g.box->devices());
        return tensor_to_python(
            without_gil(g, [&](GroupCoordinator& c) { return c.all_to_all(t, send_counts); }),
            g.box->devices());
      });

  py::class_<AsyncHandle>(module, "Handle", "An asynchronous operation in flight.")
      .def("wait", &AsyncHandle::wait, py::arg("timeout") = py::none(),
           "Waits for the operation (its group's timeout unless `timeout` seconds are given) and "
           "returns its result: None for a send, the dict for a receive. Raises its error.")
      .def("is_completed", &AsyncHandle::is_completed);
}

}  // namespace

void register_groups(py::module_& module) {
  register_state(module);
  register_group(module);
  module.def("_state", [](std::shared_ptr<RuntimeBox> box, int rank) {
    RuntimeBox::Use use(*box);
    use.runtime().rank(rank);  // Error(invalid_argument) unless hosted here
    return StateRef{std::move(box), rank};
  });
}

}  // namespace rankmesh::python
