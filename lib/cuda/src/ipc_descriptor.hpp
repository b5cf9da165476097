// IpcDescriptor: what travels in place of a CUDA tensor's bytes between two processes of one
// node (CudaBackend::export_to_peer / import_from_peer). Native-endian and laid out as the
// compiler lays it out: both ends are the same build on the same node.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

namespace rankmesh::cuda {

struct IpcDescriptor {
  static constexpr std::uint32_t kMagic = 0x43504943;  // "CIPC"
  static constexpr std::uint32_t kVersion = 1;

  std::uint32_t magic = kMagic;
  std::uint32_t version = kVersion;
  std::int32_t pid = 0;     // the exporter
  std::int32_t device = 0;  // its device index
  // The tensor: its base allocation's handle, where the tensor starts in it, its bytes, and its
  // address in the exporter (used as it is when the importer is the exporter's own process,
  // where CUDA refuses to open its own handles).
  cudaIpcMemHandle_t memory{};
  std::uint64_t offset = 0;
  std::uint64_t nbytes = 0;
  std::uint64_t address = 0;
  // Recorded on the exporter's stream after its copy of the tensor: the bytes are final after it.
  cudaIpcEventHandle_t ready{};
  std::uint64_t ready_address = 0;  // the cudaEvent_t in the exporter, for its own process
  // Where the importer says its copy has completed: it writes `generation` into 32-bit slot
  // `slot` of the exporter's acknowledgement array (its own allocation), after the copy, on its
  // stream. The exporter releases its copy once it reads that value there.
  cudaIpcMemHandle_t acks{};
  std::uint64_t acks_address = 0;
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
  // CLOCK_MONOTONIC (std::chrono::steady_clock, one clock for the whole node) in nanoseconds:
  // the importer refuses the export from then on; the exporter holds its copy for as long
  // again, so that an import accepted just in time still finds the memory.
  std::int64_t accept_until_ns = 0;
};

static_assert(std::is_trivially_copyable_v<IpcDescriptor>);

}  // namespace rankmesh::cuda
