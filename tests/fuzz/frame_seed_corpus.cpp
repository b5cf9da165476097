// Writes seeds for frame_fuzz: valid frame streams (one or several frames on a link), one per
// file, into DIRECTORY; with --landing, seeds for landing_fuzz: each stream after a description
// of a landing that its first frame fits (landing_fuzz.cpp reads it); with --lent, seeds for
// shm_record_fuzz: the same frames as shm writes them, payloads above 8 bytes lent.
#include <sys/uio.h>

#include <algorithm>
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

// landing_fuzz's description of a landing for `first`: its group, operation and sequence number
// (one byte each), then dtype, rank and dimensions of up to 4 of its tensors (small ones only;
// a larger one is described as a scalar, which it does not fit).
std::vector<std::uint8_t> landing_for(const Frame& first) {
  const std::size_t count = std::min<std::size_t>(first.tensors.size(), 4);
  std::vector<std::uint8_t> out{static_cast<std::uint8_t>(count), static_cast<std::uint8_t>(first.header.group),
                                static_cast<std::uint8_t>(first.header.op), static_cast<std::uint8_t>(first.header.seq)};
  for (std::size_t i = 0; i < count; ++i) {
    const Shape& shape = first.tensors[i].shape();
    const bool small = shape.rank() <= 3 && std::all_of(shape.begin(), shape.end(), [](std::int64_t d) { return d <= 8; });
    out.push_back(static_cast<std::uint8_t>(first.tensors[i].dtype()));
    out.push_back(static_cast<std::uint8_t>(small ? shape.rank() : 0));
    if (small)
      for (std::int64_t dim : shape) out.push_back(static_cast<std::uint8_t>(dim));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const bool landing = argc == 3 && std::string(argv[2]) == "--landing";
  const bool lent = argc == 3 && std::string(argv[2]) == "--lent";
  if (argc != 2 && !landing && !lent) {
    std::cerr << "usage: frame_seed_corpus DIRECTORY [--landing | --lent]\n";
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
    if (landing) {
      const std::vector<std::uint8_t> description = landing_for(stream.front());
      out.write(reinterpret_cast<const char*>(description.data()), static_cast<std::streamsize>(description.size()));
    }
    FrameEncoder encoder;
    for (std::size_t seq = 0; seq < stream.size(); ++seq)
      for (const iovec& span : encoder.encode(stream[seq], seq, lent ? 8 : FrameEncoder::kNeverLend))
        out.write(static_cast<const char*>(span.iov_base), static_cast<std::streamsize>(span.iov_len));
    if (!out) return 1;
  }
  std::cout << "wrote " << written << " seeds to " << directory << "\n";
  return 0;
}
