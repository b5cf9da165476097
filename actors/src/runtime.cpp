#include "rankmesh/runtime.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#include <caf/all.hpp>

#include "auth.hpp"
#include "bootstrap/bootstrap.hpp"
#include "bootstrap/control_messages.hpp"
#include "bootstrap/rank_actor.hpp"
#include "buffer_pool.hpp"
#include "data_plane.hpp"
#include "environment.hpp"
#include "local_exchange.hpp"
#include "parallel_state_impl.hpp"
#include "parker.hpp"
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

// RANKMESH_SPIN_US overrides RuntimeOptions::spin, launched or embedded: the trade-off between
// latency and idle CPU is the operator's to choose without rebuilding the engine.
std::chrono::microseconds spin_from_environment(std::chrono::microseconds spin) {
  const char* text = std::getenv("RANKMESH_SPIN_US");
  if (text == nullptr || *text == '\0') return spin;
  char* end = nullptr;
  errno = 0;
  const long long us = std::strtoll(text, &end, 10);
  if (*end != '\0' || errno != 0 || us < 0 || us > 1'000'000)
    throw Error(Errc::invalid_config, std::string("RANKMESH_SPIN_US must be a whole number of "
                                                  "microseconds from 0 to 1000000, got '") +
                                          text + "'");
  return std::chrono::microseconds(us);
}

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

void default_log(const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); }

// What a rank actor does when its world fails: fail the rank's channels and wake its waiters.
std::function<void(const std::string&)> failing(std::shared_ptr<RankContext> context) {
  return [context = std::move(context)](const std::string& reason) {
    context->fail(reason);
    context->tracer().mark_failure("peer_failure", reason);
  };
}

// What a rank actor does when another member failed one of the rank's groups (weak: the actor
// does not keep the context alive).
std::function<void(std::uint32_t, const std::string&)> failing_group(const std::shared_ptr<RankContext>& context) {
  return [weak = std::weak_ptr<RankContext>(context)](std::uint32_t group, const std::string& reason) {
    if (auto context = weak.lock()) context->group_failed(group, reason);
  };
}

// How a rank tells its group's other members that it failed the group: a notice to its rank
// actor, which relays it (RankContext::set_group_notifier). Never blocks.
RankContext::GroupNotifier announcing(const caf::actor& rank_actor) {
  return [address = caf::actor_cast<caf::actor_addr>(rank_actor)](
             std::uint32_t group, std::vector<int> members, std::string reason) {
    if (auto actor = caf::actor_cast<caf::actor>(address))
      caf::anon_send(actor, group_fail_atom::value, group, std::move(members), std::move(reason));
  };
}

}  // namespace

struct Runtime::Impl {
  RuntimeOptions options;
  caf::actor_system_config cfg;
  caf::actor_system system;
  std::vector<int> local;  // ranks hosted here
  int node_count = 1;      // nodes the world spans, as the launcher or ranks_per_node says
  std::vector<std::shared_ptr<RankContext>> contexts;  // by local index
  std::vector<std::unique_ptr<ParallelState>> states;   // by local index
  // Embedded: every rank's actor, stopped at the end (across processes the bootstrap stops its own).
  std::vector<caf::actor> rank_actors;
  // Across processes only: this rank's part in the world's registry, and its channels.
  std::unique_ptr<Bootstrap> bootstrap;
  std::unique_ptr<DataPlane> data_plane;
  // Embedded: every rank's channels, through the transport the options choose.
  std::vector<std::unique_ptr<DataPlane>> embedded_planes;

  explicit Impl(RuntimeOptions opts) : options(std::move(opts)), system(configure(cfg, options)) {}

  ~Impl() {
    if (bootstrap && !states.empty()) {
      // Leave together, so that a rank finishing first does not look like a lost one.
      try {
        bootstrap->leave(deadline_after(options.timeout));
      } catch (const Error& e) {
        options.log(std::string("rankmesh: ") + e.what());
      }
    }
    for (auto& context : contexts) context->tracer().keep("shutdown");
    // Wake every rank still waiting, so that pending operations end before their coordinators.
    for (auto& context : contexts) context->fail("the runtime shut down");
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
    for (auto& actor : rank_actors) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
  }

  int index_of(int rank) const {
    auto it = std::find(local.begin(), local.end(), rank);
    return it == local.end() ? -1 : static_cast<int>(it - local.begin());
  }

  void add_state(int rank, int local_rank, std::shared_ptr<RankContext> context, caf::actor actor) {
    const int world = options.world_size;
    auto state = std::make_unique<ParallelState::Impl>(ParallelState::Impl{
        system, actor, context, options.data_parallel_size, options.timeout, options.log,
        std::nullopt, ParallelConfig{}, PlacementSpec{}, nullptr, {}});
    Group everyone(static_cast<std::size_t>(world));
    for (int i = 0; i < world; ++i) everyone[static_cast<std::size_t>(i)] = i;
    state->world = std::make_unique<GroupCoordinator>(make_group_state(context, GroupKind::world, 0, everyone));
    // Ranks of one host share CLOCK_MONOTONIC, so the files' times line up as they are.
    context->tracer().configure(options.trace_dir, options.trace_events, node_identity(),
                                !options.trace_dir.empty());
    if (!options.trace_dir.empty()) watch_dump_signal(context->tracer_handle());
    context->set_watchdog(options.watchdog);
    (void)local_rank;
    local.push_back(rank);
    contexts.push_back(std::move(context));
    states.push_back(std::make_unique<ParallelState>(std::move(state)));
  }

  // What a rank's transports need to know.
  TransportContext transport_context(int rank, int world, std::string secret,
                                     std::string listen_address, Allocator allocator) const {
    TransportContext context;
    context.rank = rank;
    context.world_size = world;
    context.secret = std::move(secret);
    context.listen_address = std::move(listen_address);
    context.allocator = std::move(allocator);
    context.log = options.log;
    return context;
  }

  // Where each of `world` ranks in this process takes the memory it receives into: the
  // caller's allocator, else the process's pool for large blocks and, for small ones (the
  // per-message path), a pool of the rank's own holding at most kRankSmallCache. One pool for
  // all took its lock's and lists' cache lines from one rank's core to the other's at each
  // small allocation: 8 B p2p over inproc 2.13 -> 1.65 us a message and its acknowledgement
  // (slow minutes of this machine, alternating runs) once each rank had a pool of its own.
  // Large blocks stay shared, so that the process's bound (1 GiB) still caches them whole.
  std::vector<Allocator> embedded_allocators(int world) const {
    if (options.allocator) return std::vector<Allocator>(static_cast<std::size_t>(world), options.allocator);
    constexpr std::size_t kSmallBlock = std::size_t{64} << 10;
    constexpr std::size_t kRankSmallCache = std::size_t{16} << 20;
    BufferPoolOptions small;
    small.max_cached_bytes = kRankSmallCache;
    std::vector<Allocator> allocators;
    for (int r = 0; r < world; ++r)
      allocators.push_back(BufferPool(small, kSmallBlock, shared_buffer_pool()).allocator());
    return allocators;
  }

  // Every rank in this process, joined through the transport table like ranks of a
  // multi-process world: inproc, unless options.transport forces another (shm, tcp: tests and
  // benchmarks run the same operations over them).
  void start_embedded() {
    const int world = options.world_size;
    const int per_node = options.ranks_per_node > 0 ? options.ranks_per_node : world;
    const std::string secret = options.transport == "auto" ? std::string() : random_secret();
    const std::vector<Allocator> allocators = embedded_allocators(world);
    std::vector<std::unique_ptr<DataPlane>> planes;
    for (int r = 0; r < world; ++r)
      planes.push_back(std::make_unique<DataPlane>(
          transport_context(r, world, secret, "127.0.0.1", allocators[static_cast<std::size_t>(r)]),
          options.transport, Reach::same_process));
    // One node, one process: what the placement (ranks_per_node) says is for the layout only.
    const std::vector<RankPlace> places(static_cast<std::size_t>(world), RankPlace{"this node", "this process"});
    connect_concurrently(planes, places);

    caf::actor leader;
    for (int r = 0; r < world; ++r) {
      auto context = std::make_shared<RankContext>(r, world, r % per_node, options.timeout,
                                                   allocators[static_cast<std::size_t>(r)],
                                                   options.backends, options.log);
      DataPlane& plane = *planes[static_cast<std::size_t>(r)];
      context->connect(plane.outbound(), plane.inbound(), {{}, plane.shared_memory()});
      RankActorConfig config;
      config.rank = r;
      config.world_size = world;
      config.fail_rank = failing(context);
      config.fail_group = failing_group(context);
      config.leader = leader;
      caf::actor actor = system.spawn(rank_actor, std::move(config));
      context->set_group_notifier(announcing(actor));
      rank_actors.push_back(actor);
      if (r == 0) leader = actor;
      add_state(r, r % per_node, std::move(context), std::move(actor));
    }
    embedded_planes = std::move(planes);
    // Where group failure notices go in one process: straight to the members' rank actors.
    for (const caf::actor& actor : rank_actors) caf::anon_send(actor, peers_atom::value, rank_actors);
  }

  // Each rank's connect waits in exchange rounds for the others: one thread per rank.
  void connect_concurrently(std::vector<std::unique_ptr<DataPlane>>& planes,
                            const std::vector<RankPlace>& places) {
    LocalExchange exchange(static_cast<int>(planes.size()));
    const Deadline deadline = deadline_after(options.timeout);
    std::vector<std::exception_ptr> failures(planes.size());
    std::vector<std::thread> threads;
    for (std::size_t r = 0; r < planes.size(); ++r)
      threads.emplace_back([&, r] {
        try {
          planes[r]->connect(places, exchange.rank(static_cast<int>(r)), deadline);
        } catch (...) {
          failures[r] = std::current_exception();
        }
      });
    for (auto& thread : threads) thread.join();
    for (auto& failure : failures)
      if (failure) std::rethrow_exception(failure);
  }

  // This process's one rank: rendezvous through rank 0's registry, then the data plane.
  void start_distributed(const ProcessPlace& place) {
    // A little past the registry's own join timeout, so that its verdict (naming the missing
    // ranks) arrives before this rank gives up waiting for it.
    const Deadline deadline = deadline_after(options.join_timeout + options.failure_timeout);
    const std::string secret = load_secret().value_or("");
    if (secret.empty())
      throw Error(Errc::invalid_argument,
                  "rank " + std::to_string(place.rank) + ": no secret: set RANKMESH_SECRET or "
                  "RANKMESH_SECRET_FILE (rankmesh launch sets one on a single node)");
    // Nothing this rank starts inherits the secret.
    unsetenv("RANKMESH_SECRET");
    // Received data lands in recycled (large: huge-page) blocks, not fresh pages per message.
    const Allocator allocator =
        options.allocator ? options.allocator : shared_buffer_pool().allocator();
    auto context = std::make_shared<RankContext>(place.rank, place.world_size, place.local_rank,
                                                 options.timeout, allocator,
                                                 options.backends, options.log);
    // A world the launcher starts on one node (LOCAL_WORLD_SIZE == WORLD_SIZE) needs no socket:
    // no tcp listener, with its thread, in every rank at start-up (~2 ms of CPU each).
    const bool one_node = place.local_world_size == place.world_size;
    data_plane = std::make_unique<DataPlane>(
        transport_context(place.rank, place.world_size, secret,
                          options.listen_address.empty() ? local_address_toward(place.master_addr)
                                                         : options.listen_address,
                          allocator),
        options.transport, one_node ? Reach::same_node : Reach::any);
    const std::string address = data_plane->address();
    options.log("rank " + std::to_string(place.rank) + ": data plane " +
                (address.empty() ? std::string("over shared memory only (no listening socket)")
                                 : "listening on " + address));

    BootstrapOptions bootstrap_options;
    bootstrap_options.rank = place.rank;
    bootstrap_options.world_size = place.world_size;
    bootstrap_options.secret = secret;
    bootstrap_options.registry_host = place.master_addr;
    bootstrap_options.registry_port = static_cast<std::uint16_t>(place.master_port);
    bootstrap_options.registry_fd = place.registry_fd;
    bootstrap_options.join_timeout = options.join_timeout;
    bootstrap_options.failure_timeout = options.failure_timeout;
    bootstrap_options.leave_timeout = options.timeout;
    bootstrap_options.log = options.log;
    bootstrap_options.fail_rank = failing(context);
    bootstrap_options.fail_group = failing_group(context);
    bootstrap_options.clock_sample = [tracer = context->tracer_handle()](std::int64_t sent_ns, std::int64_t rank0_ns,
                                                                         std::int64_t received_ns) {
      tracer->clock().sample(sent_ns, rank0_ns, received_ns);
    };
    bootstrap = std::make_unique<Bootstrap>(system, std::move(bootstrap_options), deadline);
    context->set_group_notifier(announcing(bootstrap->rank_actor()));

    const std::vector<Member> members =
        bootstrap->join(node_identity(), data_plane->address(), deadline);
    // Ranks of a multi-process world each have a process of their own.
    std::vector<RankPlace> places;
    for (const Member& member : members)
      places.push_back(RankPlace{member.node_id, member.node_id + "/rank " + std::to_string(member.rank)});
    try {
      data_plane->connect(places, bootstrap->exchange(), deadline);
    } catch (const Error& error) {
      if (!one_node || error.code() != Errc::invalid_config) throw;
      throw Error(Errc::invalid_config, std::string(error.what()) + " (the launcher said all " +
                                            std::to_string(place.world_size) +
                                            " ranks run on this node: LOCAL_WORLD_SIZE == WORLD_SIZE)");
    }
    context->connect(data_plane->outbound(), data_plane->inbound(),
                     {data_plane->same_node(), data_plane->shared_memory()});
    // Ranks on rank 0's node share its clock; the others' trace files carry the offset their
    // heartbeats estimate (ClockOffset).
    context->tracer().clock().set_shares_rank0_clock(place.rank == 0 || context->same_node(0));
    add_state(place.rank, place.local_rank, std::move(context), bootstrap->rank_actor());
  }
};

Runtime::Runtime(RuntimeOptions options) {
  std::optional<ProcessPlace> place = process_place_from_environment();
  if (place) {
    if (options.world_size != 1 && options.world_size != place->world_size)
      throw Error(Errc::invalid_config, "RuntimeOptions::world_size " +
                                            std::to_string(options.world_size) + " disagrees with the " +
                                            place->source + " world of " +
                                            std::to_string(place->world_size));
    options.world_size = place->world_size;
    if (const char* transport = std::getenv("RANKMESH_TRANSPORT")) options.transport = transport;
    if (const char* ms = std::getenv("RANKMESH_FAILURE_TIMEOUT_MS"))
      options.failure_timeout = std::chrono::milliseconds(std::max(100L, std::atol(ms)));
    if (const char* ms = std::getenv("RANKMESH_JOIN_TIMEOUT_MS"))
      options.join_timeout = std::chrono::milliseconds(std::max(100L, std::atol(ms)));
  }
  if (options.world_size < 1)
    throw Error(Errc::invalid_argument, "world size must be at least 1, got " +
                                            std::to_string(options.world_size));
  if (options.data_parallel_size < 1 || options.world_size % options.data_parallel_size != 0)
    throw Error(Errc::invalid_config, "data parallel size " +
                                          std::to_string(options.data_parallel_size) +
                                          " does not divide world size " +
                                          std::to_string(options.world_size));
  if (options.transport != "auto" && !find_transport(transport_table(), options.transport))
    throw Error(Errc::invalid_argument, "transport '" + options.transport + "' is none of " +
                                            transport_choices(transport_table()));
  if (!options.log) options.log = default_log;
  options.spin = spin_from_environment(options.spin);
  if (const char* trace = std::getenv("RANKMESH_TRACE"); trace != nullptr && *trace != '\0')
    options.trace_dir = trace;
  if (const char* fraction = std::getenv("RANKMESH_WATCHDOG"); fraction != nullptr && *fraction != '\0')
    options.watchdog = std::atof(fraction);
  if (const char* events = std::getenv("RANKMESH_TRACE_EVENTS"); events != nullptr && *events != '\0')
    options.trace_events = static_cast<std::size_t>(std::max(1L, std::atol(events)));
  set_spin_policy(SpinPolicy::for_node(options.spin, place ? place->local_world_size : 1,
                                       static_cast<int>(std::thread::hardware_concurrency())));
  impl_ = std::make_unique<Impl>(std::move(options));
  const int world = place ? place->world_size : impl_->options.world_size;
  const int per_node = place ? place->local_world_size : impl_->options.ranks_per_node;
  impl_->node_count = per_node > 0 ? (world + per_node - 1) / per_node : 1;
  if (place) {
    impl_->start_distributed(*place);
  } else {
    impl_->start_embedded();
  }
}

Runtime::~Runtime() = default;

int Runtime::world_size() const noexcept { return impl_->options.world_size; }

const std::vector<int>& Runtime::local_ranks() const noexcept { return impl_->local; }

int Runtime::node_count() const noexcept { return impl_->node_count; }

ParallelState& Runtime::rank(int rank) {
  int index = impl_->index_of(rank);
  if (index < 0)
    throw Error(Errc::invalid_argument, "rank " + std::to_string(rank) +
                                            (rank < 0 || rank >= world_size()
                                                 ? " is outside a world of " + std::to_string(world_size())
                                                 : " is not hosted by this process"));
  return *impl_->states[static_cast<std::size_t>(index)];
}

void Runtime::abort(const std::string& reason) {
  for (auto& context : impl_->contexts) context->record_failure(reason);
  for (auto& context : impl_->contexts) {
    context->fail(reason);
    context->tracer().mark_failure("abort", reason);
  }
}

}  // namespace rankmesh
