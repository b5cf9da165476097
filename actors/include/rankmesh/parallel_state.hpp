// ParallelState: one rank's parallel state — vLLM's parallel_state module, per rank.
// Used from the rank's engine thread. The rules every operation follows: docs/semantics.md.
#pragma once

#include <memory>
#include <string>

#include "rankmesh/group_coordinator.hpp"
#include "rankmesh/placement.hpp"

namespace rankmesh {

struct PlacementSpec {
  PlacementKind kind = PlacementKind::contiguous;
  SupernodeGeometry supernode;  // kind == supernode
  std::string groups_json;      // kind == explicit_groups: the layout --json schema
  bool operator==(const PlacementSpec&) const = default;
};

class ParallelState {
public:
  struct Impl;
  explicit ParallelState(std::unique_ptr<Impl> impl);
  ~ParallelState();

  int rank() const noexcept;
  int world_size() const noexcept;

  // Lays out the groups; collective over the world: every rank must pass the same sizes and
  // placement, else every rank fails with an Error(mismatch) naming the first rank that differs.
  // A second call without destroy_model_parallel() is an Error(invalid_argument).
  // vLLM's order: tensor, pipeline, prefill-context (pcp), decode-context (dcp) parallel sizes.
  void initialize_model_parallel(int tp, int pp = 1, int pcp = 1, int dcp = 1,
                                 const PlacementSpec& placement = {});
  bool model_parallel_is_initialized() const noexcept;
  // Initializes when not yet initialized; otherwise checks the sizes match (Error(mismatch)).
  void ensure_model_parallel_initialized(int tp, int pp = 1, int pcp = 1, int dcp = 1,
                                         const PlacementSpec& placement = {});
  // Finishes pending operations and drops the groups; initialize may be called again.
  void destroy_model_parallel();

  // The groups; Error(not_initialized) before initialize_model_parallel.
  GroupCoordinator& world();
  GroupCoordinator& tp();
  GroupCoordinator& pp();
  GroupCoordinator& dp();
  GroupCoordinator& ep();
  GroupCoordinator& dcp();
  GroupCoordinator& pcp();
  GroupCoordinator& group(GroupKind kind);
  // The layout itself (every group of every kind); Error(not_initialized) before initialize.
  const Layout& layout() const;

  // Fails every pending and later operation of this rank at once with `reason`.
  void abort(const std::string& reason);

  // --- timeline traces (docs/trace.md): RuntimeOptions::trace_dir or RANKMESH_TRACE=DIR
  // records every operation into a bounded ring, written to DIR/rank-<R>.trace.json on
  // shutdown, on failure and by flush_trace().
  // Writes this rank's file now; returns its path. Error(invalid_argument) without a directory.
  std::string flush_trace();
  // Writes the ring to the next of DIR's rotating dump files (as SIGUSR2 does); returns its path.
  std::string dump_trace();
  // Starts or stops recording at run time (a runtime with a trace directory starts it on).
  void set_tracing(bool on);
  bool tracing() const noexcept;

  bool is_global_first_rank() const noexcept;  // world rank 0, or nothing initialized yet
  bool is_local_first_rank() const noexcept;   // local rank 0 on its node

private:
  std::unique_ptr<Impl> impl_;
};

// The module-level graph capture: enters the TP and the PP group's captures with one shared side
// stream, current for the scope.
class ParallelGraphCapture {
public:
  explicit ParallelGraphCapture(ParallelState& state)
      : tp_(state.tp().graph_capture()), pp_(state.pp().graph_capture(tp_.shared_stream())) {}
  Stream& stream() const noexcept { return tp_.stream(); }

private:
  GraphCapture tp_;
  GraphCapture pp_;
};

}  // namespace rankmesh
