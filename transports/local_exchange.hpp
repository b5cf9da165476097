// LocalExchange: the Exchange among ranks that are threads of one process (an embedded runtime,
// tests). A table of rounds behind a mutex; each rank's all_gather waits for the others'.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "exchange.hpp"

namespace rankmesh {

class LocalExchange {
public:
  explicit LocalExchange(int world_size);

  // The Exchange as rank `rank` uses it. Lives as long as this LocalExchange.
  Exchange& rank(int rank);

private:
  class Member final : public Exchange {
  public:
    Member(LocalExchange& table, int rank) : table_(table), rank_(rank) {}
    std::vector<std::string> all_gather(const std::string& round, const std::string& value,
                                        Deadline deadline) override;

  private:
    LocalExchange& table_;
    int rank_;
  };
  struct Round {
    std::vector<std::string> values;  // by rank
    std::vector<bool> given;          // by rank
    int count = 0;
  };

  const int world_size_;
  std::vector<Member> members_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, Round> rounds_;
};

}  // namespace rankmesh
