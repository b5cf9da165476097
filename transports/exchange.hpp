// Exchange: the one service bootstrap gives transports. Each rank of the world puts in a value
// for a named round and gets every rank's value back, indexed by rank. A transport connects
// with it (its address, its segment names) and nothing else; the CAF registry implements it
// across processes, a plain table in one process.
#pragma once

#include <string>
#include <vector>

#include "deadline.hpp"

namespace rankmesh {

class Exchange {
public:
  virtual ~Exchange() = default;
  // Blocks until every rank has put in its value for `round`; throws Error(timeout) at the
  // deadline, naming the ranks that did not. Rounds are used once each.
  virtual std::vector<std::string> all_gather(const std::string& round, const std::string& value,
                                              Deadline deadline) = 0;
};

}  // namespace rankmesh
