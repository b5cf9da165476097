// CallSite: names the collectives the calling thread issues while it lives, so that members
// which reach different call sites fail naming them ("all_reduce float16 [8, 4096] sum at
// 'layer3.attn'" against "... at 'layer3.mlp'") even where the tensors happen to agree. Every
// collective carries its caller's request to the other members (the operation, dtype, reduce
// op, dimension, root, shape and this tag), and they compare it with their own.
//
//   {
//     rankmesh::CallSite site("layer3.attn");
//     tp.all_reduce(x);
//   }
//
// Sites nest: the innermost names the call; leaving it restores the outer one.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace rankmesh {

class CallSite {
public:
  // At most kMaxTag bytes: a longer tag throws Error(invalid_argument).
  explicit CallSite(std::string_view tag);
  ~CallSite();
  CallSite(const CallSite&) = delete;
  CallSite& operator=(const CallSite&) = delete;

  // The calling thread's innermost tag; empty outside every CallSite.
  static std::string_view current() noexcept;

  static constexpr std::size_t kMaxTag = 64;

private:
  std::string previous_;
};

}  // namespace rankmesh
