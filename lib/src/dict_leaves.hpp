// The tensors of a dict, in the order its metadata lists them (split(), the codec's write_dict),
// as pointers through which they may be replaced: a dict handed over whole in one process gets
// the peer's copies of its tensors in place of the caller's.
#pragma once

#include <vector>

#include "rankmesh/tensor_dict.hpp"

namespace rankmesh {

struct DictLeaves {
  // Appends the tensors of `dict` to `leaves`. False, with `leaves` partly filled, where the
  // codec would refuse the dict (an undefined tensor, a list holding a tensor or a dict): encoding
  // it then names what is wrong.
  static bool collect(TensorDict& dict, std::vector<Tensor*>& leaves);
};

}  // namespace rankmesh
