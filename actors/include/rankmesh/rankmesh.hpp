// rankmesh: the distributed parallel state of an inference engine. Everything an engine uses.
// What the operations promise (threads, order, matching, timeouts, memory, reductions):
// docs/semantics.md; the error codes: docs/errors.md.
#pragma once

#include "rankmesh/runtime.hpp"
#include "rankmesh/parallel_state.hpp"
#include "rankmesh/group_coordinator.hpp"
#include "rankmesh/handle.hpp"
#include "rankmesh/call_site.hpp"
#include "rankmesh/dtype.hpp"
#include "rankmesh/device.hpp"
#include "rankmesh/tensor.hpp"
#include "rankmesh/tensor_dict.hpp"
#include "rankmesh/reduce_op.hpp"
#include "rankmesh/device_backend.hpp"
#include "rankmesh/stream.hpp"
#include "rankmesh/event.hpp"
#include "rankmesh/graph_capture.hpp"
#include "rankmesh/layout.hpp"
#include "rankmesh/placement.hpp"
#include "rankmesh/error.hpp"
