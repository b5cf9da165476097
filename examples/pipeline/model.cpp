#include "model.hpp"

#include <cmath>

namespace pipeline {
namespace {

// splitmix64: a cheap, well-mixed hash, so weights depend on (seed, layer, which, row, col) only.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

float uniform(std::uint64_t key) {  // in [-1, 1)
  return static_cast<float>(mix(key) >> 40) / static_cast<float>(1 << 23) - 1.0f;
}

}  // namespace

Matrix weights(const ModelShape& m, int layer, int which, int row0, int rows, int col0, int cols) {
  const int fan_in = which == 0 ? m.hidden : m.ffn;
  const float scale = 1.0f / std::sqrt(static_cast<float>(fan_in));
  Matrix w(static_cast<std::size_t>(rows) * cols);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      std::uint64_t key = mix(m.seed) ^ mix((static_cast<std::uint64_t>(layer) << 40) ^
                                            (static_cast<std::uint64_t>(which) << 36) ^
                                            (static_cast<std::uint64_t>(row0 + r) << 18) ^
                                            static_cast<std::uint64_t>(col0 + c));
      w[static_cast<std::size_t>(r) * cols + c] = uniform(key) * scale;
    }
  return w;
}

Matrix input(const ModelShape& m, int index) {
  Matrix x(static_cast<std::size_t>(m.tokens) * m.hidden);
  for (std::size_t i = 0; i < x.size(); ++i)
    x[i] = uniform(mix(m.seed + 17) ^ mix((static_cast<std::uint64_t>(index) << 32) ^ i));
  return x;
}

Matrix matmul(const Matrix& a, const Matrix& b, int n, int k, int p) {
  Matrix out(static_cast<std::size_t>(n) * p, 0.0f);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < k; ++j) {
      const float aij = a[static_cast<std::size_t>(i) * k + j];
      const float* row = &b[static_cast<std::size_t>(j) * p];
      float* o = &out[static_cast<std::size_t>(i) * p];
      for (int c = 0; c < p; ++c) o[c] += aij * row[c];
    }
  return out;
}

void activate(Matrix& x) {
  for (float& v : x) v = std::tanh(v);
}

LayerShard layer_shard(const ModelShape& m, int layer, int tp_rank, int tp) {
  const int part = m.ffn / tp;
  return LayerShard{weights(m, layer, 0, 0, m.hidden, tp_rank * part, part),
                    weights(m, layer, 1, tp_rank * part, part, 0, m.hidden)};
}

Matrix partial_mlp(const ModelShape& m, const LayerShard& shard, const Matrix& x, int tp) {
  const int part = m.ffn / tp;
  Matrix inner = matmul(x, shard.w1, m.tokens, m.hidden, part);
  activate(inner);
  return matmul(inner, shard.w2, m.tokens, part, m.hidden);
}

Matrix reference(const ModelShape& m, int microbatch) {
  Matrix hidden = input(m, microbatch);
  Matrix residual(hidden.size(), 0.0f);
  for (int layer = 0; layer < m.layers; ++layer) {
    for (std::size_t i = 0; i < hidden.size(); ++i) residual[i] += hidden[i];
    hidden = partial_mlp(m, layer_shard(m, layer, 0, 1), residual, 1);
  }
  for (std::size_t i = 0; i < hidden.size(); ++i) hidden[i] += residual[i];
  return hidden;
}

}  // namespace pipeline
