#include "rankmesh/parallel_state.hpp"

#include "bootstrap/control_messages.hpp"
#include "parallel_state_impl.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

// What every rank must agree on, as text: compared by the leader, quoted in its error.
std::string describe(const ParallelConfig& c, const PlacementSpec& p) {
  std::string text = "tp " + std::to_string(c.tp) + ", pp " + std::to_string(c.pp) + ", dp " +
                     std::to_string(c.dp) + ", dcp " + std::to_string(c.dcp) + ", pcp " +
                     std::to_string(c.pcp) + ", placement " + to_string(p.kind);
  if (p.kind == PlacementKind::supernode)
    text += " (" + std::to_string(p.supernode.devices_per_node) + " devices per node, " +
            std::to_string(p.supernode.tp_nodes) + " nodes per tp group)";
  if (p.kind == PlacementKind::explicit_groups)
    text += " (groups " + std::to_string(std::hash<std::string>{}(p.groups_json)) + ")";
  return text;
}

Layout lay_out(const ParallelConfig& config, const PlacementSpec& placement) {
  switch (placement.kind) {
    case PlacementKind::contiguous: return contiguous_layout(config);
    case PlacementKind::supernode: return supernode_layout(config, placement.supernode);
    case PlacementKind::explicit_groups: {
      Layout layout = explicit_layout(placement.groups_json);
      if (!(implied_config(layout) == config))
        throw Error(Errc::invalid_config, "the explicit groups imply " +
                                              describe(implied_config(layout), placement) +
                                              ", but initialize_model_parallel passed " +
                                              describe(config, placement));
      return layout;
    }
  }
  throw Error(Errc::invalid_argument, "unknown placement");
}

}  // namespace

ParallelState::ParallelState(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ParallelState::~ParallelState() = default;

int ParallelState::rank() const noexcept { return impl_->context->rank(); }
int ParallelState::world_size() const noexcept { return impl_->context->world_size(); }

void ParallelState::initialize_model_parallel(int tp, int pp, int pcp, int dcp,
                                              const PlacementSpec& placement) {
  const std::string who = "rank " + std::to_string(rank());
  if (impl_->layout)
    throw Error(Errc::invalid_argument, who + ": initialize_model_parallel called twice; call "
                                              "destroy_model_parallel first");
  ParallelConfig config{world_size(), tp, pp, impl_->data_parallel_size, dcp, pcp};
  const std::string proposal = describe(config, placement);

  // Agree first, so that a rank with other sizes fails every rank the same way (even when its
  // own sizes are impossible, the others learn which rank differs).
  std::string verdict;
  caf::scoped_actor self{impl_->system};
  self->request(impl_->rank_actor, impl_->timeout, propose_atom::value, proposal)
      .receive([&](const std::string& outcome) { verdict = outcome; },
               [&](caf::error& error) {
                 verdict = "initialize_model_parallel: not every rank proposed within " +
                           std::to_string(impl_->timeout.count()) + " ms (" +
                           impl_->system.render(error) + ")";
               });
  if (!verdict.empty())
    throw Error(verdict.find("not every rank") == std::string::npos ? Errc::mismatch : Errc::timeout,
                who + ": " + verdict);

  Layout layout = lay_out(config, placement);
  impl_->context->begin_layout_epoch();  // the groups below are new, whatever ids they reuse
  for (GroupKind kind : kAllGroupKinds) {
    auto& slot = impl_->groups[static_cast<std::size_t>(kind)];
    if (kind == GroupKind::world) continue;
    Coordinate at = layout.coordinate(kind, rank());
    slot = std::make_unique<GroupCoordinator>(make_group_state(
        impl_->context, kind, at.group, layout.groups(kind)[static_cast<std::size_t>(at.group)]));
  }
  impl_->layout = std::move(layout);
  impl_->config = config;
  impl_->placement = placement;
  auto index = [&](GroupKind kind) { return std::to_string(group(kind).rank_in_group()); };
  impl_->log("rank " + std::to_string(rank()) + " of " + std::to_string(world_size()) + ": DP " +
             index(GroupKind::dp) + ", PP " + index(GroupKind::pp) + ", TP " +
             index(GroupKind::tp) + ", EP " + index(GroupKind::ep));
}

bool ParallelState::model_parallel_is_initialized() const noexcept { return impl_->layout.has_value(); }

void ParallelState::ensure_model_parallel_initialized(int tp, int pp, int pcp, int dcp,
                                                      const PlacementSpec& placement) {
  if (!impl_->layout) return initialize_model_parallel(tp, pp, pcp, dcp, placement);
  ParallelConfig wanted{world_size(), tp, pp, impl_->data_parallel_size, dcp, pcp};
  if (!(wanted == impl_->config) || !(placement == impl_->placement))
    throw Error(Errc::mismatch, "rank " + std::to_string(rank()) +
                                    ": model parallel is initialized with " +
                                    describe(impl_->config, impl_->placement) + ", not " +
                                    describe(wanted, placement));
}

void ParallelState::destroy_model_parallel() {
  impl_->context->drain(deadline_after(impl_->timeout));
  for (GroupKind kind : kAllGroupKinds)
    if (kind != GroupKind::world) impl_->groups[static_cast<std::size_t>(kind)].reset();
  impl_->layout.reset();
}

GroupCoordinator& ParallelState::group(GroupKind kind) {
  if (kind == GroupKind::world) return *impl_->world;
  auto& slot = impl_->groups[static_cast<std::size_t>(kind)];
  if (!slot)
    throw Error(Errc::not_initialized, "rank " + std::to_string(rank()) + ": the " +
                                           to_string(kind) + " group does not exist before "
                                           "initialize_model_parallel");
  return *slot;
}

GroupCoordinator& ParallelState::world() { return group(GroupKind::world); }
GroupCoordinator& ParallelState::tp() { return group(GroupKind::tp); }
GroupCoordinator& ParallelState::pp() { return group(GroupKind::pp); }
GroupCoordinator& ParallelState::dp() { return group(GroupKind::dp); }
GroupCoordinator& ParallelState::ep() { return group(GroupKind::ep); }
GroupCoordinator& ParallelState::dcp() { return group(GroupKind::dcp); }
GroupCoordinator& ParallelState::pcp() { return group(GroupKind::pcp); }

const Layout& ParallelState::layout() const {
  if (!impl_->layout)
    throw Error(Errc::not_initialized, "rank " + std::to_string(rank()) +
                                           ": no layout before initialize_model_parallel");
  return *impl_->layout;
}

std::string ParallelState::flush_trace() { return impl_->context->tracer().write("flush"); }
std::string ParallelState::dump_trace() { return impl_->context->tracer().dump("api"); }
void ParallelState::set_tracing(bool on) { impl_->context->tracer().set_on(on); }
bool ParallelState::tracing() const noexcept { return impl_->context->tracer().on(); }

void ParallelState::abort(const std::string& reason) {
  impl_->context->fail(reason);
  impl_->context->tracer().mark_failure("abort", reason);
}

bool ParallelState::is_global_first_rank() const noexcept {
  return !impl_->layout || rank() == 0;
}

bool ParallelState::is_local_first_rank() const noexcept { return impl_->context->local_rank() == 0; }

}  // namespace rankmesh
