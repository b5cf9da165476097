#include "arguments.hpp"

#include <charconv>
#include <climits>

namespace rankmesh::tool {

Arguments::Arguments(const std::vector<std::string>& args, const std::set<std::string>& valued,
                     const std::set<std::string>& switches) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::optional<std::string> inline_value;
    if (auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = flag.substr(eq + 1);
      flag.resize(eq);
    }
    if (valued.count(flag)) {
      if (!inline_value) {
        if (i + 1 >= args.size()) throw UsageError(flag + " needs a value");
        inline_value = args[++i];
      }
      if (!values_.emplace(flag, *inline_value).second) throw UsageError(flag + " given twice");
    } else if (switches.count(flag) && !inline_value) {
      if (!values_.emplace(flag, "").second) throw UsageError(flag + " given twice");
    } else {
      throw UsageError("unknown argument '" + args[i] + "'");
    }
  }
}

bool Arguments::has(const std::string& flag) const { return values_.count(flag) != 0; }

std::optional<std::string> Arguments::text(const std::string& flag) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::optional<int> Arguments::positive(const std::string& flag) const {
  auto value = text(flag);
  if (!value) return std::nullopt;
  int n = 0;
  const char* end = value->data() + value->size();
  auto [ptr, ec] = std::from_chars(value->data(), end, n);
  if (ec != std::errc() || ptr != end || value->empty() || n < 1)
    throw UsageError(flag + " must be a positive integer, got '" + *value + "'");
  return n;
}

}  // namespace rankmesh::tool
