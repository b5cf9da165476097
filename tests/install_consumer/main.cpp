// An engine's first use of an installed rankmesh: lay out groups and round-trip metadata.
#include <cstdio>

#include <rankmesh/codec.hpp>
#include <rankmesh/layout.hpp>

int main() {
  rankmesh::ParallelConfig config;
  config.world_size = 8;
  config.tp = 2;
  config.pp = 4;
  rankmesh::Layout layout = rankmesh::contiguous_layout(config);
  if (layout.groups(rankmesh::GroupKind::pp).at(1) != rankmesh::Group{1, 3, 5, 7}) return 1;

  rankmesh::TensorDict dict;
  dict.set("step", 7);
  rankmesh::SplitDict parts = rankmesh::split(dict);
  auto decoded = rankmesh::decode_metadata(rankmesh::encode(parts.metadata));
  if (!decoded || !(decoded.value() == parts.metadata)) return 1;
  std::puts("consumer linked rankmesh::rankmesh");
  return 0;
}
