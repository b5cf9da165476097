// Writes a seed corpus for codec_fuzz: valid encodings of varied metadata and objects, one per
// file, into the directory given as the only argument.
#include <cstdint>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "codec.hpp"

using namespace rankmesh;

namespace {

MetaEntry entry(std::vector<std::string> path, MetaEntry::Kind kind) {
  MetaEntry e;
  e.path = std::move(path);
  e.kind = kind;
  return e;
}

MetaEntry value(std::vector<std::string> path, Value v) {
  MetaEntry e = entry(std::move(path), MetaEntry::Kind::value);
  e.value = std::move(v);
  return e;
}

MetaEntry tensor(std::vector<std::string> path, DeviceType device, DType dtype, Shape shape,
                 bool sliced) {
  MetaEntry e = entry(std::move(path), MetaEntry::Kind::tensor);
  e.tensor = TensorMeta{device, dtype, shape, sliced};
  return e;
}

std::vector<Value> objects() {
  return {None{},
          true,
          std::int64_t{-1} << 40,
          std::numeric_limits<std::int64_t>::max(),
          2.5,
          std::numeric_limits<double>::quiet_NaN(),
          "tp:0",
          std::string(300, 'k'),
          Bytes{0, 1, 2, 255},
          List{1, -200, 70000, "x", Bytes{}, List{List{None{}}}, 0.25, false}};
}

std::vector<Metadata> metadata() {
  Metadata every_dtype;
  for (std::size_t code = 0; code < kDTypeCount; ++code) {
    const DType dtype = *dtype_from_code(code);
    every_dtype.entries.push_back(
        tensor({"t", to_string(dtype)}, *device_type_from_code(code % kDeviceTypeCount), dtype,
               Shape{static_cast<std::int64_t>(code), 4096}, code % 3 == 0));
  }
  const Metadata pipeline_step{{
      tensor({"hidden_states"}, DeviceType::cuda, DType::bf16, Shape{16, 4096}, true),
      tensor({"residual"}, DeviceType::cuda, DType::bf16, Shape{16, 4096}, false),
      value({"step"}, 12),
  }};
  const Metadata nested{{
      value({"a", "b", "c", "d"}, List{1, List{2, List{3}}}),
      entry({"a", "empty"}, MetaEntry::Kind::empty_dict),
      tensor({"a", "scalar"}, DeviceType::cpu, DType::f32, Shape{}, false),
      tensor({"a", "none"}, DeviceType::cpu, DType::i64, Shape{0, 3, 1, 1, 1, 1, 1, 1}, false),
      value({"name"}, "decode"),
      value({"blob"}, Bytes{9, 8, 7}),
  }};
  return {Metadata{}, every_dtype, pipeline_step, nested};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: seed_corpus DIRECTORY\n";
    return 2;
  }
  const std::string directory = argv[1];
  int written = 0;
  auto write = [&](const std::vector<std::uint8_t>& bytes) {
    std::ofstream out(directory + "/seed_" + std::to_string(written++), std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    return static_cast<bool>(out);
  };
  std::vector<std::uint8_t> bytes;
  for (const Metadata& m : metadata()) {
    encode(m, bytes);
    if (!write(bytes)) return 1;
  }
  for (const Value& v : objects()) {
    encode(v, bytes);
    if (!write(bytes)) return 1;
  }
  // Cached frames (schema_cache.hpp): a definition in slot 1, and a use of the schema that
  // codec_fuzz's receiver holds in slot 0 (x [2, 1], n 1, e, inner.y [1]).
  const Metadata defined = metadata()[2];
  encode(defined, bytes);
  bytes.insert(bytes.begin(), {0xc1, 'D', 1, 2});
  if (!write(bytes)) return 1;
  if (!write({0xc1, 'U', 0, 1, 2, 1, 1, 1})) return 1;
  std::cout << "wrote " << written << " seeds to " << directory << "\n";
  return 0;
}
