#include "coordinator/group_state.hpp"

#include <algorithm>

#include "coordinator/object_rings.hpp"
#include "rank_context.hpp"

namespace rankmesh {
namespace {
int rank_in(const Group& members, int rank, const std::string& name) {
  auto it = std::find(members.begin(), members.end(), rank);
  if (it == members.end())
    throw Error(Errc::invalid_argument, "rank " + std::to_string(rank) + " is not a member of " + name);
  return static_cast<int>(it - members.begin());
}
}  // namespace

GroupState::GroupState(std::shared_ptr<RankContext> context, GroupKind kind, int index,
                       Group members)
    : rank_context(std::move(context)), kind(kind), index(index),
      id(RankContext::group_id(kind, index,
                               kind == GroupKind::world ? 0 : rank_context->layout_epoch())),
      members(std::move(members)),
      name(std::string(to_string(kind)) + ":" + std::to_string(index)),
      history_label(OpHistory::label_of(name)),
      rank_in_group(rank_in(this->members, rank_context->rank(), name)),
      timeout(rank_context->default_timeout()),
      sequences(this->members.size()),
      schemas(this->members.size()) {}

GroupState::~GroupState() = default;

}  // namespace rankmesh

namespace rankmesh {

void SequenceNumbers::note_unfinished(std::uint64_t first, std::uint64_t end) {
  if (unfinished_.size() == kMaxUnfinished) {
    forgotten_below_ = unfinished_.front().second;
    unfinished_.erase(unfinished_.begin());
  }
  unfinished_.emplace_back(first, end);
}

bool SequenceNumbers::unfinished(std::uint64_t seq) const noexcept {
  if (seq < forgotten_below_) return true;
  return std::any_of(unfinished_.begin(), unfinished_.end(),
                     [seq](const auto& range) { return seq >= range.first && seq < range.second; });
}

}  // namespace rankmesh

namespace rankmesh {

void RecentRequests::remember(std::uint64_t first, std::uint64_t end,
                              std::span<const std::uint8_t> trailer) {
  Entry& entry = entries_[next_];
  next_ = (next_ + 1) % kRemembered;
  entry.first = first;
  entry.end = end;
  entry.size = std::min(trailer.size(), entry.bytes.size());
  std::copy_n(trailer.begin(), entry.size, entry.bytes.begin());
}

std::string RecentRequests::describe(std::uint64_t seq) const {
  for (const Entry& entry : entries_)
    if (entry.size != 0 && seq >= entry.first && seq < entry.end)
      return CollectiveRequest::describe({entry.bytes.data(), entry.size});
  return {};
}

}  // namespace rankmesh
