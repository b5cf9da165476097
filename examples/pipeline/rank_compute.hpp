// RankCompute: one rank's share of its stage's layers, wherever its numbers live. The pipeline
// in main.cpp (receive, layers with their TP all_reduces, send) is the same for the host and a
// GPU; only the tensors' device and what does the arithmetic differ.
#pragma once

#include <cstddef>

#include "model.hpp"
#include "rankmesh/tensor.hpp"

namespace pipeline {

// Activations are tokens x hidden f32 tensors. Tensors handed in are only read, never written:
// a received or all-reduced tensor may share its memory with other ranks of this process.
class RankCompute {
public:
  virtual ~RankCompute() = default;

  virtual std::size_t weight_bytes() const = 0;  // of this rank's shards
  // Microbatch `index` of the model's input as the first stage starts it: hidden = the input,
  // residual = 0.
  virtual void input(int index, rankmesh::Tensor& hidden, rankmesh::Tensor& residual) = 0;
  // The rank's `layer`-th layer (counted within its stage): residual += hidden (a new tensor
  // replaces `residual`), and returns this rank's partial sum act(residual W1[:, shard])
  // W2[shard, :], which the caller all-reduces over the TP group into the next hidden.
  virtual rankmesh::Tensor layer(int layer, const rankmesh::Tensor& hidden,
                                 rankmesh::Tensor& residual) = 0;
  // hidden + residual after the model's last layer, on the host.
  virtual Matrix output(const rankmesh::Tensor& hidden, const rankmesh::Tensor& residual) = 0;
  // Waits for the rank's work still in flight and throws its error, if any.
  virtual void finish() = 0;
};

}  // namespace pipeline
