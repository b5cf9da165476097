// The example's model: a stack of tensor-parallel MLP layers with a fused residual add,
// vLLM style. Weights come from a seeded hash, so every rank builds exactly its own shard and
// the one-rank reference builds the whole matrices.
#pragma once

#include <cstdint>
#include <vector>

namespace pipeline {

struct ModelShape {
  int layers = 8;
  int hidden = 64;
  int ffn = 128;     // inner size; split across TP ranks (column-parallel, then row-parallel)
  int tokens = 8;    // rows of one microbatch
  std::uint64_t seed = 1;
};

using Matrix = std::vector<float>;  // row-major

// Rows [row0, row0 + rows) x columns [col0, col0 + cols) of layer `layer`'s matrix `which`
// (0: hidden x ffn, 1: ffn x hidden).
Matrix weights(const ModelShape& m, int layer, int which, int row0, int rows, int col0, int cols);
// Microbatch `index` of the model's input, tokens x hidden.
Matrix input(const ModelShape& m, int index);

// out = a (n x k) * b (k x p)
Matrix matmul(const Matrix& a, const Matrix& b, int n, int k, int p);
void activate(Matrix& x);  // tanh

// One layer on one rank's shard: x = hidden + residual; residual = x;
// hidden = act(x W1[:, shard]) W2[shard, :] (a partial sum: the caller all-reduces it).
struct LayerShard {
  Matrix w1;  // hidden x (ffn / tp)
  Matrix w2;  // (ffn / tp) x hidden
};
LayerShard layer_shard(const ModelShape& m, int layer, int tp_rank, int tp);
Matrix partial_mlp(const ModelShape& m, const LayerShard& shard, const Matrix& x, int tp);

// The whole model on one rank: returns hidden + residual after the last layer.
Matrix reference(const ModelShape& m, int microbatch);

}  // namespace pipeline
