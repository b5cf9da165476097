// Writes a seed corpus for frame_fuzz: valid frame streams (one or several frames on a link),
// one per file, into the directory given as the only argument.
#include <sys/uio.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "frame_codec.hpp"

using namespace rankmesh;

namespace {

Tensor filled(Shape shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* bytes = t.data_as<std::uint8_t>();
  for (std::size_t i = 0; i < t.nbytes(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 7);
  return t;
}

Frame frame(std::vector<std::uint8_t> metadata, std::vector<Tensor> tensors) {
  Frame f;
  f.header = FrameHeader{2, 5, 11, 1};
  f.metadata = std::move(metadata);
  f.tensors = std::move(tensors);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: frame_seed_corpus DIRECTORY\n";
    return 2;
  }
  std::vector<Tensor> every_dtype;
  for (std::size_t code = 0; code < kDTypeCount; ++code)
    every_dtype.push_back(filled({static_cast<std::int64_t>(code % 3), 2}, *dtype_from_code(code)));
  const std::vector<std::vector<Frame>> streams = {
      {frame({}, {})},
      {frame({0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0xc0}, {})},
      {frame({0x90}, {filled({4, 4}, DType::f32)})},
      {frame({}, {filled({}, DType::i64), filled({0, 7}, DType::bf16),
                  filled({1, 1, 1, 1, 1, 1, 1, 2}, DType::u8)})},
      {frame({1, 2, 3}, every_dtype)},
      {frame({}, {}), frame({9}, {filled({3}, DType::i8)}), frame({}, {filled({2}, DType::f16)})},
  };
  const std::string directory = argv[1];
  int written = 0;
  for (const std::vector<Frame>& stream : streams) {
    std::ofstream out(directory + "/seed_" + std::to_string(written++), std::ios::binary);
    FrameEncoder encoder;
    for (std::size_t seq = 0; seq < stream.size(); ++seq)
      for (const iovec& span : encoder.encode(stream[seq], seq))
        out.write(static_cast<const char*>(span.iov_base), static_cast<std::streamsize>(span.iov_len));
    if (!out) return 1;
  }
  std::cout << "wrote " << written << " seeds to " << directory << "\n";
  return 0;
}
