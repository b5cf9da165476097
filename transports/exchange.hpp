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
  // deadline (an exchange in one process names the ranks that did not put theirs in; the
  // registry's says it had no answer) and Error(peer_failed) when the world fails meanwhile.
  // Rounds are used once each.
  virtual std::vector<std::string> all_gather(const std::string& round, const std::string& value,
                                              Deadline deadline) = 0;
};

// A value with one entry per peer, for transports that publish something different to each
// ("3=/proc/..;5=/proc/..;"): append with add_entry, read a peer's with entry_for.
inline void add_entry(std::string& value, int peer, const std::string& entry) {
  value += std::to_string(peer) + "=" + entry + ";";
}
// The entry for `peer` in `value`, or "" when there is none.
inline std::string entry_for(const std::string& value, int peer) {
  const std::string key = std::to_string(peer) + "=";
  std::size_t at = value.find(key);
  while (at != std::string::npos && at != 0 && value[at - 1] != ';') at = value.find(key, at + 1);
  if (at == std::string::npos) return {};
  const std::size_t begin = at + key.size();
  return value.substr(begin, value.find(';', begin) - begin);
}

}  // namespace rankmesh
