// CollectiveRequest: what a member asked of one collective, as far as every member must agree —
// the operation, dtype, reduce op, dimension, root, the part of the shape the operation needs
// alike on every member, and the caller's call-site tag (rankmesh/call_site.hpp). Every message
// of a collective carries its sender's request; a receiver whose own differs fails naming both
// ("group rank 3 (rank 3) asked for all_reduce float16 [8, 4096] sum, this rank for all_reduce
// float16 [8, 2048] sum") instead of hanging or computing on mismatched parts.
//
// How it travels: appended to the message's metadata (after the operation's own metadata — an
// object, a dict — if any), so that no transport or frame format changes:
//
//   ... metadata | 'Q' u8 | op u8 | dtype u8 | reduce u8 | dim i8 | rank u8 | root i32 |
//                  rank x dim i64 | tag bytes | body length u8
//
// All integers little-endian. 0xff in dtype, reduce or rank: not part of this request (a
// broadcast receiver that passes no tensor accepts any shape and dtype); a dimension of -1 may
// differ between members (all_gather's gathered one). The body is at most 255 bytes: 12, eight
// dimensions and a tag of at most CallSite::kMaxTag bytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "op_code.hpp"
#include "rankmesh/dtype.hpp"
#include "rankmesh/reduce_op.hpp"
#include "rankmesh/tensor.hpp"

namespace rankmesh {

class CollectiveRequest {
public:
  // Only the operation, and the calling thread's call-site tag (CallSite::current()).
  explicit CollectiveRequest(OpCode op);

  // Each returns *this. A shape's dimension `free_dim` (-1: none) may differ between members.
  CollectiveRequest& dtype(DType dtype);
  CollectiveRequest& reduce(ReduceOp op);
  CollectiveRequest& dim(int dim);
  CollectiveRequest& root(int group_rank);
  CollectiveRequest& shape(const Shape& shape, int free_dim = -1);
  // The dtype and shape of `tensor`, or, for an undefined one, any dtype and shape.
  CollectiveRequest& tensor(const Tensor& tensor, int free_dim = -1);

  // The bytes appended to a message's metadata (the format above), laid out on first use —
  // which reads the call-site tag, so it must come while the CallSite lives (Call::ask does it).
  std::span<const std::uint8_t> trailer() const;
  // Whether a member asking for `other` (another trailer, its length byte included) agrees with
  // this one: the same bytes, or the same where one side accepts any dtype and shape.
  bool agrees_with(std::span<const std::uint8_t> other) const;
  // "all_reduce float16 [8, 4096] sum" (with ", tag 'layer3'" when tagged); a trailer that does
  // not decode describes itself as such.
  std::string describe() const;
  static std::string describe(std::span<const std::uint8_t> trailer);

  // The request at the end of received `metadata` (its trailer, length byte included), or an
  // empty span when the bytes end in no well-formed request. The caller removes it.
  static std::span<const std::uint8_t> trailer_of(std::span<const std::uint8_t> metadata);

  static constexpr std::size_t kFixedBytes = 10;  // 'Q' .. root
  static constexpr std::size_t kMaxBody = 255;

private:
  void lay_out() const;

  OpCode op_;
  std::uint8_t dtype_ = 0xff;
  std::uint8_t reduce_ = 0xff;
  std::int8_t dim_ = -1;
  std::int32_t root_ = -1;
  std::optional<Shape> shape_;
  int free_dim_ = -1;
  std::string_view tag_;  // CallSite's, alive while the call runs
  mutable std::array<std::uint8_t, kMaxBody + 1> bytes_{};
  mutable std::size_t size_ = 0;  // 0: not laid out yet
};

}  // namespace rankmesh
