#include "received_payloads.hpp"

#include <string>

#include "payload_block.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {

void allocate_received_payloads(const FrameHeader& header,
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
  for (std::size_t i = 0; i < described.size(); ++i) {
    const TensorDescriptor& desc = described[i];
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
}

}  // namespace rankmesh
