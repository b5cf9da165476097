#include "received_payloads.hpp"

#include <cstring>
#include <exception>
#include <string>

#include "payload_block.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

// What the allocator throws, named: an Error passes as it is, anything else (std::bad_alloc)
// becomes Error(limit_exceeded) saying which tensor could not be had.
Tensor allocate_tensor(const Allocator& allocate, const TensorDescriptor& desc, std::size_t index) {
  try {
    return allocate(desc.shape, desc.dtype);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    throw Error(Errc::limit_exceeded, "cannot allocate tensor " + std::to_string(index) + " (" +
                                          to_string(desc.shape) + ", " + to_string(desc.dtype) +
                                          "): " + error.what());
  }
}

}  // namespace

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
                                      : allocate_tensor(allocate, desc, i);
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

void LandedPayloads::land(const Landing* landing, bool reading, std::size_t current,
                          const FrameHeader& header, std::span<const TensorDescriptor> described,
                          const std::vector<Tensor>& tensors) noexcept {
  if (!reading) return;
  if (landing == nullptr) {
    if (current < Landing::kMaxTensors) withdrawn_ |= landed_ & (~LandedTensors{0} << current);
    return;
  }
  LandedTensors left = withdrawn_;
  for (std::size_t i = 0; left != 0; ++i, left >>= 1) {
    if ((left & 1) == 0) continue;
    if (!landing->fits(header, i, described[i].shape, described[i].dtype) ||
        landing->tensors[i].data() != tensors[i].data())
      return;  // other memory: what is withdrawn stays so
  }
  withdrawn_ = 0;
}

void LandedPayloads::divert(std::span<const TensorDescriptor> described, const Allocator& allocate,
                            std::vector<Tensor>& tensors, std::size_t current, std::size_t done) {
  for (std::size_t i = 0; withdrawn_ != 0; ++i) {
    const LandedTensors bit = LandedTensors{1} << i;
    if ((withdrawn_ & bit) == 0) continue;
    Tensor own = allocate_tensor(allocate, described[i], i);
    if (i == current && done != 0) std::memcpy(own.data(), tensors[i].data(), done);
    tensors[i] = std::move(own);
    withdrawn_ &= ~bit;  // after the allocation: one that throws leaves the bit for a retry
  }
}

}  // namespace rankmesh
