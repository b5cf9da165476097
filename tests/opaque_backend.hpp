// OpaqueBackend: a test device whose memory the host may not read directly, standing in for a
// GPU. A tensor's data() points at a decoy filled with kDecoy; the real bytes live in a private
// arena that only this backend's copy operations reach. Code that reads or writes tensor memory
// itself, instead of through the device's copies, sees or changes only the decoy.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "rankmesh/device_backend.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh::testing {

class OpaqueBackend final : public DeviceBackend {
public:
  static constexpr unsigned char kDecoy = 0xDB;

  // xpu:0 by default: any device that is not the host's.
  explicit OpaqueBackend(Device device = Device{DeviceType::xpu, 0})
      : device_(device), arena_(std::make_shared<Arena>()), default_stream_(make_host_stream(*this)) {}

  Device device() const noexcept override { return device_; }

  Tensor allocate(Shape shape, DType dtype) override {
    const auto bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
    if (bytes == 0) return Tensor::wrap(nullptr, shape, dtype, device_, nullptr);
    auto decoy = std::make_unique<unsigned char[]>(bytes);
    std::memset(decoy.get(), kDecoy, bytes);
    arena_->add(decoy.get(), bytes);
    // The deleter holds the arena, so tensors may outlive the backend.
    Tensor tensor = Tensor::wrap(decoy.get(), shape, dtype, device_, [arena = arena_](void* p) {
      arena->remove(p);
      delete[] static_cast<unsigned char*>(p);
    });
    decoy.release();
    return tensor;
  }

  std::shared_ptr<Stream> create_stream() override { return make_host_stream(*this); }
  Stream& default_stream() override { return *default_stream_; }

protected:
  void enqueue_copy_to_host(const Tensor& src, std::size_t src_offset, void* host_dst,
                            std::size_t bytes, Stream& stream) override {
    stream.enqueue([arena = arena_, src, src_offset, host_dst, bytes] {
      std::memcpy(host_dst, arena->real(src) + src_offset, bytes);
    });
  }
  void enqueue_copy_from_host(const void* host_src, std::size_t bytes, const Tensor& dst,
                              std::size_t dst_offset, Stream& stream) override {
    stream.enqueue([arena = arena_, host_src, bytes, dst, dst_offset] {
      std::memcpy(arena->real(dst) + dst_offset, host_src, bytes);
    });
  }
  void enqueue_copy(const Tensor& src, std::size_t src_offset, const Tensor& dst,
                    std::size_t dst_offset, std::size_t bytes, Stream& stream) override {
    stream.enqueue([arena = arena_, src, src_offset, dst, dst_offset, bytes] {
      std::memmove(arena->real(dst) + dst_offset, arena->real(src) + src_offset, bytes);
    });
  }

private:
  // Real bytes keyed by the decoy's address.
  class Arena {
  public:
    void add(const void* decoy, std::size_t bytes) {
      std::lock_guard lock(mutex_);
      real_.emplace(decoy, std::vector<unsigned char>(bytes));
    }
    void remove(const void* decoy) {
      std::lock_guard lock(mutex_);
      real_.erase(decoy);
    }
    // Stable while the tensor lives: map nodes and their vectors never move.
    unsigned char* real(const Tensor& tensor) {
      std::lock_guard lock(mutex_);
      auto it = real_.find(tensor.data());
      if (it == real_.end()) {
        throw Error(Errc::invalid_argument, "tensor on " + to_string(tensor.device()) +
                                                " was not allocated by this opaque backend");
      }
      return it->second.data();
    }

  private:
    std::mutex mutex_;
    std::unordered_map<const void*, std::vector<unsigned char>> real_;
  };

  Device device_;
  std::shared_ptr<Arena> arena_;
  std::shared_ptr<Stream> default_stream_;
};

}  // namespace rankmesh::testing
