#include "local_exchange.hpp"

#include "rankmesh/error.hpp"

namespace rankmesh {

LocalExchange::LocalExchange(int world_size) : world_size_(world_size) {
  members_.reserve(static_cast<std::size_t>(world_size));
  for (int rank = 0; rank < world_size; ++rank) members_.emplace_back(*this, rank);
}

Exchange& LocalExchange::rank(int rank) { return members_.at(static_cast<std::size_t>(rank)); }

std::vector<std::string> LocalExchange::Member::all_gather(const std::string& round,
                                                           const std::string& value,
                                                           Deadline deadline) {
  LocalExchange& table = table_;
  const auto world = static_cast<std::size_t>(table.world_size_);
  std::unique_lock lock(table.mutex_);
  Round& entry = table.rounds_[round];
  if (entry.values.empty()) {
    entry.values.resize(world);
    entry.given.resize(world);
  }
  const auto mine = static_cast<std::size_t>(rank_);
  if (entry.given[mine])
    throw Error(Errc::invalid_argument, "rank " + std::to_string(rank_) +
                                            " took part in exchange round '" + round + "' twice");
  entry.given[mine] = true;
  entry.values[mine] = value;
  ++entry.count;
  table.changed_.notify_all();
  if (!table.changed_.wait_until(lock, deadline,
                                 [&] { return entry.count == table.world_size_; })) {
    std::string missing;
    for (std::size_t r = 0; r < world; ++r)
      if (!entry.given[r]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    throw Error(Errc::timeout, "rank " + std::to_string(rank_) + ": exchange round '" + round +
                                   "' timed out waiting for rank(s) " + missing);
  }
  return entry.values;
}

}  // namespace rankmesh
