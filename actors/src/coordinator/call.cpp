#include "coordinator/call.hpp"

#include <algorithm>
#include <thread>

namespace rankmesh {

Call::Call(GroupState& group, const char* operation)
    : group_(group), rank_(*group.rank_context), operation_(operation),
      deadline_(deadline_after(group.timeout)) {
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
}

Call::~Call() {
  if (guarded_) group_.user.store(std::thread::id{});
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

int Call::check_peer(int group_rank, const char* role) const {
  if (group_rank < 0 || group_rank >= size())
    throw Error(Errc::invalid_argument, where() + ": " + role + " " + std::to_string(group_rank) +
                                            " is outside the group of " + std::to_string(size()));
  return group_rank;
}

int Call::check_other_peer(int group_rank, const char* role) const {
  check_peer(group_rank, role);
  if (group_rank == rank_in_group())
    throw Error(Errc::invalid_argument, where() + ": " + role + " is this rank itself");
  return group_rank;
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
