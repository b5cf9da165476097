#include "rankmesh/call_site.hpp"

#include <utility>

#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {
thread_local std::string current_tag;
}  // namespace

CallSite::CallSite(std::string_view tag) {
  if (tag.size() > kMaxTag)
    throw Error(Errc::invalid_argument, "call-site tag '" + std::string(tag.substr(0, 16)) +
                                            "...' has " + std::to_string(tag.size()) +
                                            " bytes; at most " + std::to_string(kMaxTag));
  previous_ = std::exchange(current_tag, std::string(tag));
}

CallSite::~CallSite() { current_tag = std::move(previous_); }

std::string_view CallSite::current() noexcept { return current_tag; }

}  // namespace rankmesh
