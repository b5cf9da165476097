#include "host_compute.hpp"

#include <cstring>

namespace pipeline {
namespace {

rankmesh::Tensor to_tensor(const Matrix& m, int rows, int cols) {
  rankmesh::Tensor t = rankmesh::Tensor::empty({rows, cols}, rankmesh::DType::f32);
  std::memcpy(t.data(), m.data(), m.size() * sizeof(float));
  return t;
}

Matrix to_matrix(const rankmesh::Tensor& t) {
  return Matrix(t.data_as<float>(), t.data_as<float>() + t.numel());
}

}  // namespace

HostCompute::HostCompute(const ModelShape& m, int first_layer, int last_layer, int tp_rank, int tp)
    : m_(m), tp_(tp) {
  for (int layer = first_layer; layer < last_layer; ++layer)
    shards_.push_back(layer_shard(m, layer, tp_rank, tp));
}

std::size_t HostCompute::weight_bytes() const {
  std::size_t bytes = 0;
  for (const auto& shard : shards_) bytes += (shard.w1.size() + shard.w2.size()) * sizeof(float);
  return bytes;
}

void HostCompute::input(int index, rankmesh::Tensor& hidden, rankmesh::Tensor& residual) {
  hidden = to_tensor(pipeline::input(m_, index), m_.tokens, m_.hidden);
  residual = rankmesh::Tensor::empty({m_.tokens, m_.hidden}, rankmesh::DType::f32);  // zeroed
}

rankmesh::Tensor HostCompute::layer(int layer, const rankmesh::Tensor& hidden,
                                    rankmesh::Tensor& residual) {
  Matrix x = to_matrix(residual);
  const Matrix h = to_matrix(hidden);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] += h[i];
  residual = to_tensor(x, m_.tokens, m_.hidden);
  return to_tensor(partial_mlp(m_, shards_[static_cast<std::size_t>(layer)], x, tp_), m_.tokens,
                   m_.hidden);
}

Matrix HostCompute::output(const rankmesh::Tensor& hidden, const rankmesh::Tensor& residual) {
  Matrix out = to_matrix(hidden);
  const Matrix r = to_matrix(residual);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] += r[i];
  return out;
}

}  // namespace pipeline
