#include "coordinator/device_ipc.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <span>

#include "coordinator/device_staging.hpp"
#include "dict_metadata.hpp"
#include "rank_context.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh {
namespace {

constexpr std::uint32_t kTableMagic = 0x58444D52;  // "RMDX" little-endian; both ends share a node

// Said once per process: a fallback is a performance matter, not a failure, but an operator who
// turned the path on must learn that it does not apply.
void log_fallback_once(RankContext& rank, const std::string& line) {
  static std::atomic<bool> said{false};
  if (!said.exchange(true)) rank.log(line);
}

}  // namespace

Tensor DeviceExports::try_export(const Call& call, const Tensor& t, int dst, bool donated,
                                 std::size_t index) {
  RankContext& rank = call.rank();
  if (!rank.device_ipc() || !rank.same_node(call.group().global_rank(dst))) return {};
  DeviceBackend& backend = rank.backend_for(t.device());
  Stream& stream = rank.stream_for(t.device());
  try {
    // The sender's own copy, which nothing writes until the receiver has copied it; the
    // caller's current stream waits for it before later work may overwrite `t`.
    Tensor exported = t;
    if (!donated) {
      exported = backend.allocate(t.shape(), t.dtype());
      backend.copy(t, exported, stream);
      current_stream(backend).wait(*exported.ready_event());
    } else if (const auto& ready = t.ready_event()) {
      stream.wait(*ready);
    }
    const auto now = std::chrono::steady_clock::now();
    const auto hold = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        call.group().timeout);
    const auto hold_until = hold < std::chrono::steady_clock::time_point::max() - now
                                ? now + hold
                                : std::chrono::steady_clock::time_point::max();
    std::vector<std::uint8_t> descriptor = backend.export_to_peer(exported, stream, hold_until);
    Tensor payload = rank.allocate(Shape{static_cast<std::int64_t>(descriptor.size())}, DType::u8);
    std::memcpy(payload.data(), descriptor.data(), descriptor.size());
    indices_.push_back(static_cast<std::uint32_t>(index));
    return payload;
  } catch (const Error& error) {
    log_fallback_once(rank, call.where() + ": " + to_string(t.device()) +
                                " tensors to other processes of this node are staged through "
                                "host memory (RANKMESH_CUDA_IPC=1, but the export failed: " +
                                error.what() + ")");
    return {};
  }
}

void DeviceExports::finish(Frame& frame) {
  if (indices_.empty()) return;
  const std::uint32_t head[2] = {kTableMagic, static_cast<std::uint32_t>(indices_.size())};
  const std::size_t bytes = sizeof head + indices_.size() * sizeof(std::uint32_t);
  Tensor table = Tensor::empty(Shape{static_cast<std::int64_t>(bytes)}, DType::u8);
  std::memcpy(table.data(), head, sizeof head);
  std::memcpy(static_cast<std::uint8_t*>(table.data()) + sizeof head, indices_.data(),
              indices_.size() * sizeof(std::uint32_t));
  frame.tensors.push_back(std::move(table));
  indices_.clear();
}

DeviceImports::DeviceImports(const Call& call, int src, std::vector<Tensor>& payloads,
                             std::size_t expected) {
  if (payloads.size() != expected + 1) return;  // no table; a wrong count is reported later
  Tensor table = std::move(payloads.back());
  payloads.pop_back();
  auto malformed = [&](const std::string& why) {
    return Error(Errc::malformed, call.where() + ": " + call.who(src) +
                                      " sent a device descriptor table that " + why);
  };
  if (table.device().type != DeviceType::cpu || table.dtype() != DType::u8 ||
      table.shape().rank() != 1 || table.nbytes() < 2 * sizeof(std::uint32_t) ||
      table.nbytes() % sizeof(std::uint32_t) != 0)
    throw malformed("is not a u8 table of 32-bit words");
  const std::size_t words = table.nbytes() / sizeof(std::uint32_t);
  std::vector<std::uint32_t> all(words);
  std::memcpy(all.data(), table.data(), table.nbytes());
  if (all[0] != kTableMagic) throw malformed("does not start with its magic");
  if (all[1] != words - 2) throw malformed("counts " + std::to_string(all[1]) + " entries in " +
                                           std::to_string(words - 2) + " words");
  indices_.assign(all.begin() + 2, all.end());
  for (std::size_t i = 0; i < indices_.size(); ++i)
    if (indices_[i] >= expected || (i > 0 && indices_[i] <= indices_[i - 1]))
      throw malformed("names payload " + std::to_string(indices_[i]) + " out of order or beyond " +
                      std::to_string(expected));
}

bool DeviceImports::is_descriptor(std::size_t index) const noexcept {
  return std::binary_search(indices_.begin(), indices_.end(), static_cast<std::uint32_t>(index));
}

Tensor DeviceImports::import(const Call& call, int src, const Tensor& descriptor,
                             const TensorMeta& meta) const {
  if (meta.device_type == DeviceType::cpu || descriptor.device().type != DeviceType::cpu ||
      descriptor.dtype() != DType::u8 || descriptor.shape().rank() != 1)
    throw Error(Errc::malformed, call.where() + ": " + call.who(src) +
                                     " sent a device descriptor for a tensor that is not a device "
                                     "tensor, or one that is not host bytes");
  RankContext& rank = call.rank();
  DeviceBackend& backend =
      rank.backend_for(receiving_device(rank, meta.device_type, call.where()));
  try {
    return backend.import_from_peer(
        std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(descriptor.data()),
                                      descriptor.nbytes()),
        meta.shape, meta.dtype, current_stream(backend));
  } catch (const Error& error) {
    throw Error(error.code(), call.where() + ": the " + to_string(backend.device()) +
                                  " tensor exported by " + call.who(src) +
                                  " cannot be imported: " + error.what());
  }
}

}  // namespace rankmesh
