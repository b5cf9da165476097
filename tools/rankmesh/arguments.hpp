// A small `--flag value` parser for the tool's subcommands: strict, with one-line errors.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace rankmesh::tool {

// A usage mistake: the tool prints the message on one line and exits with status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Arguments {
public:
  // `valued` flags take one value, `switches` take none; anything else is a UsageError.
  Arguments(const std::vector<std::string>& args, const std::set<std::string>& valued,
            const std::set<std::string>& switches);

  bool has(const std::string& flag) const;
  std::optional<std::string> text(const std::string& flag) const;
  // A positive integer, or nullopt when the flag is absent.
  std::optional<int> positive(const std::string& flag) const;

private:
  std::map<std::string, std::string> values_;
};

}  // namespace rankmesh::tool
