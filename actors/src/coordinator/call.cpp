#include "coordinator/call.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace rankmesh {

Call::Call(GroupState& group, const char* operation)
    : group_(group), rank_(*group.rank_context), operation_(operation),
      deadline_(deadline_after(group.timeout)) {
  // A group that failed as a whole (here or on another member: RankContext::fail_group) fails
  // every later operation on it at once, as receives waiting on it fail (watchdog.cpp).
  // While no group of the rank ever failed: one relaxed load and a branch.
  if (rank_.any_group_failed()) [[unlikely]] refuse_if_group_failed();
  rank_.drain(deadline_);
#ifndef NDEBUG
  const std::thread::id self = std::this_thread::get_id();
  std::thread::id inside{};
  if (group_.user.compare_exchange_strong(inside, self)) {
    guarded_ = true;
  } else if (inside != self) {  // the same thread nested (send-allgather on this group) is fine
    throw Error(Errc::invalid_argument, group_.name + ": " + operation_ +
                                            " called while another thread is inside this "
                                            "GroupCoordinator; use one coordinator from one "
                                            "thread at a time");
  }
#endif
  if (rank_.tracer().on()) begin_trace();
}

void Call::refuse_if_group_failed() const {
  if (const std::string failure = rank_.group_failure(group_.id); !failure.empty())
    throw rank_.reported(Error(Errc::mismatch, where() + ": the group failed: " + failure));
}

Call::~Call() {
  if (trace_) end_trace();
  const std::uint64_t end = group_.sequences.collective;
  if (end != collective_at_start_) {
    // Destroyed while an exception unwinds: the call failed (collectives are not called from
    // destructors, so a count from before the call is not needed; point-to-point calls skip it).
    if (std::uncaught_exceptions() > 0)
      group_.sequences.note_unfinished(collective_at_start_, end);
    else if (request_)
      group_.recent_requests.remember(collective_at_start_, end, request_->trailer());
  }
  if (guarded_) group_.user.store(std::thread::id{});
}

void Call::begin_trace() noexcept {
  TraceEvent& event = trace_.emplace();
  event.name = operation_;
  const std::string_view name(operation_);
  event.collective = !name.starts_with("send") && !name.starts_with("recv");
  event.lane = rank_.on_stream_thread() ? 1 : 0;
  event.set_group(group_.name);
  event.group_id = group_.id;
  uncaught_at_start_ = std::uncaught_exceptions();
  event.start_ns = Tracer::now_ns();
}

void Call::trace_message(std::uint64_t seq, int peer, bool sent, std::size_t bytes) const noexcept {
  TraceEvent& event = *trace_;
  event.bytes += bytes;
  event.add_peer(peer);
  const char* transport = rank_.links().traits_to(peer).transport;
  event.transport =
      event.transport[0] == '\0' || std::strcmp(event.transport, transport) == 0 ? transport : "mixed";
  if (event.seq < 0) event.seq = static_cast<std::int64_t>(seq);
  if (!event.collective && event.flow == TraceEvent::Flow::none) {
    event.flow = sent ? TraceEvent::Flow::sent : TraceEvent::Flow::received;
    event.flow_src = sent ? rank_.rank() : peer;
    event.flow_dst = sent ? peer : rank_.rank();
  }
}

void Call::end_trace() noexcept {
  TraceEvent& event = *trace_;
  event.end_ns = Tracer::now_ns();
  event.failed = std::uncaught_exceptions() > uncaught_at_start_;
  if (event.failed) std::strncpy(event.message, Tracer::last_failure(), sizeof event.message - 1);
  rank_.tracer().record(event);
}

const CollectiveRequest& Call::request() const {
  if (!request_)  // a collective that forgot to state its request: a bug here, not the caller's
    throw std::logic_error(where() + ": sends a collective message without its request");
  return *request_;
}

Deadline Call::watchdog_point() const noexcept {
  const double fraction = rank_.watchdog();
  if (!(fraction > 0 && fraction < 1)) return deadline_;
  const auto before_deadline = std::chrono::duration_cast<std::chrono::nanoseconds>(
      group_.timeout * (1.0 - fraction));
  return deadline_ - before_deadline;
}

std::chrono::nanoseconds Call::left() const {
  return std::max(std::chrono::nanoseconds::zero(),
                  std::chrono::duration_cast<std::chrono::nanoseconds>(deadline_ - Clock::now()));
}

std::string Call::who(int group_rank) const {
  return "group rank " + std::to_string(group_rank) + " (rank " +
         std::to_string(group_.global_rank(group_rank)) + ")";
}

std::string Call::where() const { return group_.name + " " + who(rank_in_group()) + " " + operation_; }

void Call::refuse_peer(int group_rank, const char* role) const {
  if (group_rank == rank_in_group())
    throw Error(Errc::invalid_argument, where() + ": " + role + " is this rank itself");
  throw Error(Errc::invalid_argument, where() + ": " + role + " " + std::to_string(group_rank) +
                                          " is outside the group of " + std::to_string(size()));
}

int Call::resolve_dim(const Tensor& tensor, int dim) const {
  const int dims = tensor.shape().rank();
  const int resolved = dim < 0 ? dim + dims : dim;
  if (resolved < 0 || resolved >= dims)
    throw Error(Errc::invalid_argument, where() + ": dim " + std::to_string(dim) +
                                            " is outside a tensor of shape " +
                                            to_string(tensor.shape()));
  return resolved;
}

Error Call::payload_mismatch(int src, const Tensor& got, const std::string& expected) const {
  return Error(Errc::mismatch, where() + ": " + who(src) + " sent " + to_string(got.shape()) + " " +
                                   to_string(got.dtype()) + ", expected " + expected);
}

std::string milliseconds_text(std::chrono::nanoseconds duration) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(duration).count()) +
         " ms";
}

}  // namespace rankmesh
