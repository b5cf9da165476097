#include "received_payloads.hpp"

#include <string>

#include "payload_block.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {

LandedTensors allocate_received_payloads(const FrameHeader& header,
                                         std::span<const TensorDescriptor> described,
                                         const Landing* landing, const Allocator& allocate,
                                         std::vector<Tensor>& tensors) {
  auto lands = [&](std::size_t i) {
    return landing != nullptr && landing->fits(header, i, described[i].shape, described[i].dtype);
  };
  PayloadBlock block;
  for (std::size_t i = 0; i < described.size(); ++i)
    if (!described[i].lent && PayloadBlock::small(described[i].nbytes) && !lands(i))
      block.count(i, described[i].nbytes);
  block.allocate(allocate);
  LandedTensors landed = 0;
  for (std::size_t i = 0; i < described.size(); ++i) {
    const TensorDescriptor& desc = described[i];
    if (lands(i)) landed |= LandedTensors{1} << i;
    Tensor tensor = lands(i)           ? landing->tensors[i]
                    : block.shares(i) ? block.take(desc.shape, desc.dtype)
                                      : allocate(desc.shape, desc.dtype);
    if (!tensor.defined() || tensor.device().type != DeviceType::cpu ||
        !(tensor.shape() == desc.shape) || tensor.dtype() != desc.dtype ||
        (desc.nbytes != 0 && tensor.data() == nullptr))
      throw Error(Errc::invalid_argument,
                  "the allocator did not return a host tensor of shape " + to_string(desc.shape) +
                      " and dtype " + to_string(desc.dtype) + " for tensor " + std::to_string(i));
    tensors.push_back(std::move(tensor));
  }
  return landed;
}

void divert_withdrawn(LandedTensors& withdrawn, std::span<const TensorDescriptor> described,
                      const Allocator& allocate, std::vector<Tensor>& tensors) {
  for (std::size_t i = 0; withdrawn != 0; ++i) {
    const LandedTensors bit = LandedTensors{1} << i;
    if ((withdrawn & bit) == 0) continue;
    tensors[i] = allocate(described[i].shape, described[i].dtype);
    withdrawn &= ~bit;  // after the allocation: one that throws leaves the bit for a retry
  }
}

}  // namespace rankmesh
