// OpaqueBackend: a test device whose memory the host may not read directly, standing in for a
// GPU. A tensor's data() points at a decoy filled with kDecoy; the real bytes live in a private
// arena that only this backend's copy operations reach. Code that reads or writes tensor memory
// itself, instead of through the device's copies, sees or changes only the decoy.
//
// It also shares memory with "other processes" the way CUDA IPC does (export_to_peer /
// import_from_peer), within one process: an export is an entry in a process-wide table that
// holds the exporter's tensor, the descriptor names the entry, and the importer's copy takes the
// entry out as it reads it, so the exporter's tensor goes away only once that copy has run.
// Embedded ranks (one process, any transport) exercise the same-node protocol with it.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "rankmesh/device_backend.hpp"
#include "rankmesh/error.hpp"

namespace rankmesh::testing {

class OpaqueBackend final : public DeviceBackend {
public:
  static constexpr unsigned char kDecoy = 0xDB;

  // xpu:0 by default: any device that is not the host's. `shares`: false for a device that
  // cannot share its memory (export_to_peer and import_from_peer refuse, as DeviceBackend's).
  explicit OpaqueBackend(Device device = Device{DeviceType::xpu, 0}, bool shares = true)
      : device_(device), shares_(shares), arena_(std::make_shared<Arena>()),
        default_stream_(make_host_stream(*this)) {}

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

  std::vector<std::uint8_t> export_to_peer(const Tensor& t, Stream& stream,
                                           std::chrono::steady_clock::time_point hold_until) override {
    if (!shares_) return DeviceBackend::export_to_peer(t, stream, hold_until);
    if (t.device() != device_ || t.nbytes() == 0)
      throw Error(Errc::invalid_argument, "export_to_peer: a non-empty tensor of " + to_string(device_));
    (void)arena_->real(t);  // ours, or Error(invalid_argument)
    auto point = Event::create();
    stream.record(*point);
    Descriptor d{kExportMagic, static_cast<std::uint32_t>(::getpid()), 0, t.nbytes()};
    {
      Exports& table = exports();
      std::lock_guard lock(table.mutex);
      table.drop_expired();
      d.token = ++table.last_token;
      table.held.emplace(d.token, Held{arena_, t, std::move(point), hold_until});
    }
    std::vector<std::uint8_t> bytes(sizeof d);
    std::memcpy(bytes.data(), &d, sizeof d);
    return bytes;
  }

  Tensor import_from_peer(std::span<const std::uint8_t> descriptor, Shape shape, DType dtype,
                          Stream& stream) override {
    if (!shares_) return DeviceBackend::import_from_peer(descriptor, shape, dtype, stream);
    Descriptor d;
    if (descriptor.size() != sizeof d)
      throw Error(Errc::malformed, "import_from_peer: " + std::to_string(descriptor.size()) +
                                       " bytes are no opaque export descriptor");
    std::memcpy(&d, descriptor.data(), sizeof d);
    if (d.magic != kExportMagic)
      throw Error(Errc::malformed, "import_from_peer: the bytes are no opaque export descriptor");
    if (d.pid != static_cast<std::uint32_t>(::getpid()))
      throw Error(Errc::device, "import_from_peer: opaque memory is shared within one process only");
    const auto bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
    if (d.nbytes != bytes)
      throw Error(Errc::malformed, "import_from_peer: the export holds " + std::to_string(d.nbytes) +
                                       " bytes, " + to_string(shape) + " " + to_string(dtype) +
                                       " needs " + std::to_string(bytes));
    std::shared_ptr<Event> exported;
    {
      Exports& table = exports();
      std::lock_guard lock(table.mutex);
      table.drop_expired();
      auto it = table.held.find(d.token);
      if (it == table.held.end()) throw gone(d.token);
      exported = it->second.ready;
    }
    Tensor dst = allocate(shape, dtype);
    stream.wait(*exported);
    stream.enqueue([arena = arena_, dst, token = d.token] {
      // Taken out of the table, the exporter's tensor lives until this copy has run.
      Held held;
      {
        Exports& table = exports();
        std::lock_guard lock(table.mutex);
        auto it = table.held.find(token);
        if (it == table.held.end()) throw gone(token);
        held = std::move(it->second);
        table.held.erase(it);
      }
      std::memcpy(arena->real(dst), held.arena->real(held.tensor), held.tensor.nbytes());
    });
    auto copied = Event::create();
    stream.record(*copied);
    dst.set_ready_event(std::move(copied));
    return dst;
  }

  // Exports whose tensors are still held (their importers have not copied them yet), after
  // dropping those held past their time. For tests: nothing may stay held for ever.
  static std::size_t exports_held() {
    Exports& table = exports();
    std::lock_guard lock(table.mutex);
    table.drop_expired();
    return table.held.size();
  }

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

  static constexpr std::uint32_t kExportMagic = 0x5850514F;  // "OQPX"
  struct Descriptor {
    std::uint32_t magic = 0;
    std::uint32_t pid = 0;
    std::uint64_t token = 0;
    std::uint64_t nbytes = 0;
  };
  struct Held {
    std::shared_ptr<Arena> arena;  // the exporter's
    Tensor tensor;
    std::shared_ptr<Event> ready;  // the exporter's point: its bytes are final after it
    std::chrono::steady_clock::time_point until;
  };
  struct Exports {
    std::mutex mutex;
    std::uint64_t last_token = 0;
    std::map<std::uint64_t, Held> held;
    void drop_expired() {
      const auto now = std::chrono::steady_clock::now();
      std::erase_if(held, [now](const auto& entry) { return entry.second.until <= now; });
    }
  };
  static Exports& exports() {
    static Exports table;
    return table;
  }
  static Error gone(std::uint64_t token) {
    return Error(Errc::peer_failed, "import_from_peer: export " + std::to_string(token) +
                                        " is gone (its exporter stopped holding it)");
  }

  Device device_;
  bool shares_;
  std::shared_ptr<Arena> arena_;
  std::shared_ptr<Stream> default_stream_;
};

}  // namespace rankmesh::testing
