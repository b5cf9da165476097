// HostCompute: a rank's layers on the host (--device cpu), with the model's own functions.
#pragma once

#include <vector>

#include "rank_compute.hpp"

namespace pipeline {

class HostCompute final : public RankCompute {
public:
  // Builds the shards of layers [first_layer, last_layer) for TP rank `tp_rank` of `tp`.
  HostCompute(const ModelShape& m, int first_layer, int last_layer, int tp_rank, int tp);

  std::size_t weight_bytes() const override;
  void input(int index, rankmesh::Tensor& hidden, rankmesh::Tensor& residual) override;
  rankmesh::Tensor layer(int layer, const rankmesh::Tensor& hidden,
                         rankmesh::Tensor& residual) override;
  Matrix output(const rankmesh::Tensor& hidden, const rankmesh::Tensor& residual) override;
  void finish() override {}  // the host's work is done when each call returns

private:
  ModelShape m_;
  int tp_;
  std::vector<LayerShard> shards_;
};

}  // namespace pipeline
