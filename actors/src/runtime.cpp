#include "rankmesh/runtime.hpp"

#include <cstdio>
#include <cstdlib>
#include <thread>

#include <caf/all.hpp>

#include "inproc_channel.hpp"
#include "parallel_state_impl.hpp"
#include "parker.hpp"
#include "rank_actor.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {

std::chrono::milliseconds scaled_timeout(std::chrono::milliseconds base) {
  double scale = 1.0;
  if (const char* text = std::getenv("RANKMESH_TIMEOUT_SCALE")) {
    char* end = nullptr;
    double parsed = std::strtod(text, &end);
    if (end != text && parsed > 0) scale = parsed;
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(static_cast<double>(base.count()) * scale));
}

std::chrono::milliseconds default_timeout() { return scaled_timeout(std::chrono::seconds(30)); }

namespace {

caf::actor_system_config& configure(caf::actor_system_config& cfg, const RuntimeOptions& options) {
  unsigned cores = std::thread::hardware_concurrency();
  std::size_t threads = options.scheduler_threads > 0 ? static_cast<std::size_t>(options.scheduler_threads)
                                                      : (cores ? cores : 1);
  // CAF's default is max(cores, 4) work-stealing threads; on small machines that oversubscribes
  // the cores the engine threads need. Sharing also makes blocking requests cheaper (STACK.md).
  cfg.set("scheduler.max-threads", threads);
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("logger.console", caf::atom("none"));
  return cfg;
}

Tensor default_allocate(const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype); }

void default_log(const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); }

}  // namespace

struct Runtime::Impl {
  RuntimeOptions options;
  caf::actor_system_config cfg;
  caf::actor_system system;
  std::vector<std::shared_ptr<RankContext>> contexts;
  std::vector<caf::actor> actors;
  std::vector<std::unique_ptr<ParallelState>> states;

  explicit Impl(RuntimeOptions opts) : options(std::move(opts)), system(configure(cfg, options)) {}

  ~Impl() {
    // Wake every rank still waiting, so communication threads finish before they are joined.
    for (auto& context : contexts) context->fail("the runtime shut down");
    // Pending asynchronous operations use the coordinators destroyed next: let them end (they
    // fail fast now that the channels are closed).
    // Copies still queued on the ranks' streams finish too: their results may be in tensors
    // that outlive the runtime.
    const Deadline deadline = deadline_after(options.timeout);
    for (auto& context : contexts) {
      try {
        context->drain(deadline);
        context->synchronize_streams(deadline);
      } catch (...) {
        // Past the deadline, or a stream failed: its waiters get the error from their events.
      }
    }
    for (auto& actor : actors) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
  }
};

Runtime::Runtime(RuntimeOptions options) {
  if (options.world_size < 1)
    throw Error(Errc::invalid_argument, "world size must be at least 1, got " +
                                            std::to_string(options.world_size));
  if (options.data_parallel_size < 1 || options.world_size % options.data_parallel_size != 0)
    throw Error(Errc::invalid_config, "data parallel size " +
                                          std::to_string(options.data_parallel_size) +
                                          " does not divide world size " +
                                          std::to_string(options.world_size));
  if (!options.allocator) options.allocator = default_allocate;
  if (!options.log) options.log = default_log;
  set_spin_policy(SpinPolicy{options.spin, 0});
  impl_ = std::make_unique<Impl>(std::move(options));
  const RuntimeOptions& opts = impl_->options;
  const int world = opts.world_size;
  const int per_node = opts.ranks_per_node > 0 ? opts.ranks_per_node : world;

  // The inproc data plane: one channel per ordered pair of ranks.
  std::vector<std::vector<std::shared_ptr<Channel>>> channel(static_cast<std::size_t>(world));
  for (int from = 0; from < world; ++from) {
    channel[static_cast<std::size_t>(from)].resize(static_cast<std::size_t>(world));
    for (int to = 0; to < world; ++to)
      if (from != to) channel[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)] = std::make_shared<InprocChannel>();
  }
  for (int r = 0; r < world; ++r) {
    auto context = std::make_shared<RankContext>(r, world, r % per_node, opts.timeout,
                                                 opts.allocator, opts.backends);
    std::vector<std::shared_ptr<Channel>> out(static_cast<std::size_t>(world)), in(static_cast<std::size_t>(world));
    for (int peer = 0; peer < world; ++peer) {
      out[static_cast<std::size_t>(peer)] = channel[static_cast<std::size_t>(r)][static_cast<std::size_t>(peer)];
      in[static_cast<std::size_t>(peer)] = channel[static_cast<std::size_t>(peer)][static_cast<std::size_t>(r)];
    }
    context->connect(std::move(out), std::move(in));
    impl_->contexts.push_back(context);
  }
  for (int r = 0; r < world; ++r) {
    caf::actor leader = r == 0 ? caf::actor{} : impl_->actors.front();
    impl_->actors.push_back(impl_->system.spawn(rank_actor, r, world, leader));
  }
  for (int r = 0; r < world; ++r) {
    auto state = std::make_unique<ParallelState::Impl>(ParallelState::Impl{
        impl_->system, impl_->actors[static_cast<std::size_t>(r)],
        impl_->contexts[static_cast<std::size_t>(r)], opts.data_parallel_size, opts.timeout,
        opts.log, std::nullopt, ParallelConfig{}, PlacementSpec{}, nullptr, {}});
    Group everyone(static_cast<std::size_t>(world));
    for (int i = 0; i < world; ++i) everyone[static_cast<std::size_t>(i)] = i;
    state->world = std::make_unique<GroupCoordinator>(state->context, GroupKind::world, 0, everyone);
    impl_->states.push_back(std::make_unique<ParallelState>(std::move(state)));
  }
}

Runtime::~Runtime() = default;

int Runtime::world_size() const noexcept { return impl_->options.world_size; }

ParallelState& Runtime::rank(int rank) {
  if (rank < 0 || rank >= world_size())
    throw Error(Errc::invalid_argument, "rank " + std::to_string(rank) + " is outside a world of " +
                                            std::to_string(world_size()));
  return *impl_->states[static_cast<std::size_t>(rank)];
}

void Runtime::abort(const std::string& reason) {
  for (auto& context : impl_->contexts) context->fail(reason);
}

}  // namespace rankmesh
