#include "dict_leaves.hpp"

#include "dict_metadata.hpp"

namespace rankmesh {

bool DictLeaves::collect(TensorDict& dict, std::vector<Tensor*>& leaves) {
  for (Value& value : dict.values_) {
    if (auto* tensor = std::get_if<Tensor>(&value.v)) {
      if (!tensor->defined()) return false;
      leaves.push_back(tensor);
    } else if (auto* nested = std::get_if<TensorDict>(&value.v)) {
      if (!collect(*nested, leaves)) return false;
    } else if (std::holds_alternative<List>(value.v) && !is_plain(value)) {
      return false;
    }
  }
  return true;
}

}  // namespace rankmesh
