// One rank's entry in the world's directory, as the registry hands it out once every rank has
// joined, and its line in the join's answer. CAF-free: the data plane connects from it.
#pragma once

#include <string>

namespace rankmesh {

struct Member {
  int rank = 0;
  std::string node_id;  // environment.hpp's node_identity(): same node, same id
  std::string address;  // "host:port" of its data-plane listener
};

// The directory line: rank, node id and address, tab-separated (neither holds a tab).
inline std::string encode_member(const Member& member) {
  return std::to_string(member.rank) + "\t" + member.node_id + "\t" + member.address;
}

inline Member decode_member(const std::string& line) {
  const auto first = line.find('\t'), second = line.find('\t', first + 1);
  Member member;
  member.rank = std::stoi(line.substr(0, first));
  member.node_id = line.substr(first + 1, second - first - 1);
  member.address = line.substr(second + 1);
  return member;
}

}  // namespace rankmesh
