#include "coordinator/collective_request.hpp"

#include <algorithm>
#include <cstring>

#include "rankmesh/call_site.hpp"

namespace rankmesh {
namespace {

constexpr std::uint8_t kMarker = 'Q';
constexpr std::uint8_t kNone = 0xff;

// A trailer's fields, read back (for comparing with a wildcard and for error messages).
struct Fields {
  std::uint8_t op = 0, dtype = kNone, reduce = kNone, rank = kNone;
  std::int8_t dim = -1;
  std::int32_t root = -1;
  std::array<std::int64_t, Shape::kMaxRank> dims{};
  std::string_view tag;
};

template <class T>
T read_le(const std::uint8_t* at) {
  T value;
  std::memcpy(&value, at, sizeof value);  // little-endian hosts only, as the frame codec
  return value;
}

std::optional<Fields> parse(std::span<const std::uint8_t> trailer) {
  if (trailer.empty()) return std::nullopt;
  const std::size_t body = trailer.back();
  if (body + 1 != trailer.size() || body < CollectiveRequest::kFixedBytes || trailer[0] != kMarker)
    return std::nullopt;
  Fields f;
  f.op = trailer[1];
  f.dtype = trailer[2];
  f.reduce = trailer[3];
  f.dim = static_cast<std::int8_t>(trailer[4]);
  f.rank = trailer[5];
  f.root = read_le<std::int32_t>(&trailer[6]);
  const std::size_t dims = f.rank == kNone ? 0 : f.rank;
  if (dims > Shape::kMaxRank || CollectiveRequest::kFixedBytes + 8 * dims > body) return std::nullopt;
  for (std::size_t d = 0; d < dims; ++d)
    f.dims[d] = read_le<std::int64_t>(&trailer[CollectiveRequest::kFixedBytes + 8 * d]);
  const std::size_t tag_at = CollectiveRequest::kFixedBytes + 8 * dims;
  f.tag = std::string_view(reinterpret_cast<const char*>(trailer.data()) + tag_at, body - tag_at);
  return f;
}

std::string describe(const Fields& f) {
  std::string text = op_name(f.op);
  if (f.dtype != kNone) {
    const auto dtype = dtype_from_code(f.dtype);
    text += std::string(" ") + (dtype ? to_string(*dtype) : "unknown dtype");
  }
  if (f.rank != kNone) {
    text += " [";
    for (std::size_t d = 0; d < f.rank; ++d)
      text += (d ? ", " : "") + (f.dims[d] < 0 ? std::string("*") : std::to_string(f.dims[d]));
    text += "]";
  } else if (f.dtype == kNone && (f.op == static_cast<std::uint8_t>(OpCode::broadcast))) {
    text += " (any tensor)";
  }
  if (f.reduce != kNone && f.reduce <= static_cast<std::uint8_t>(ReduceOp::min))
    text += std::string(" ") + to_string(static_cast<ReduceOp>(f.reduce));
  if (f.dim >= 0) text += " along dim " + std::to_string(f.dim);
  if (f.root >= 0) text += " root group rank " + std::to_string(f.root);
  if (!f.tag.empty()) text += " at '" + std::string(f.tag) + "'";
  return text;
}

}  // namespace

CollectiveRequest::CollectiveRequest(OpCode op) : op_(op), tag_(CallSite::current()) {}

CollectiveRequest& CollectiveRequest::dtype(DType dtype) {
  dtype_ = static_cast<std::uint8_t>(dtype);
  size_ = 0;
  return *this;
}
CollectiveRequest& CollectiveRequest::reduce(ReduceOp op) {
  reduce_ = static_cast<std::uint8_t>(op);
  size_ = 0;
  return *this;
}
CollectiveRequest& CollectiveRequest::dim(int dim) {
  dim_ = static_cast<std::int8_t>(dim);
  size_ = 0;
  return *this;
}
CollectiveRequest& CollectiveRequest::root(int group_rank) {
  root_ = group_rank;
  size_ = 0;
  return *this;
}
CollectiveRequest& CollectiveRequest::shape(const Shape& shape, int free_dim) {
  shape_ = shape;
  free_dim_ = free_dim;
  size_ = 0;
  return *this;
}
CollectiveRequest& CollectiveRequest::tensor(const Tensor& tensor, int free_dim) {
  if (!tensor.defined()) return *this;  // any dtype and shape
  dtype(tensor.dtype());
  return shape(tensor.shape(), free_dim);
}

void CollectiveRequest::lay_out() const {
  std::uint8_t* out = bytes_.data();
  out[0] = kMarker;
  out[1] = static_cast<std::uint8_t>(op_);
  out[2] = dtype_;
  out[3] = reduce_;
  out[4] = static_cast<std::uint8_t>(dim_);
  out[5] = shape_ ? static_cast<std::uint8_t>(shape_->rank()) : kNone;
  std::memcpy(out + 6, &root_, 4);
  std::size_t at = kFixedBytes;
  if (shape_)
    for (int d = 0; d < shape_->rank(); ++d) {
      const std::int64_t size = d == free_dim_ ? -1 : (*shape_)[d];
      std::memcpy(out + at, &size, 8);
      at += 8;
    }
  // CallSite bounds a tag, so the body always fits; cut rather than overflow all the same.
  const std::size_t tag = std::min(tag_.size(), kMaxBody - at);
  std::memcpy(out + at, tag_.data(), tag);
  at += tag;
  out[at] = static_cast<std::uint8_t>(at);
  size_ = at + 1;
}

std::span<const std::uint8_t> CollectiveRequest::trailer() const {
  if (size_ == 0) lay_out();
  return {bytes_.data(), size_};
}

bool CollectiveRequest::agrees_with(std::span<const std::uint8_t> other) const {
  const auto mine = trailer();
  if (mine.size() == other.size() && std::equal(mine.begin(), mine.end(), other.begin())) return true;
  // Only a broadcast receiver that passed no tensor accepts any dtype and shape.
  const auto a = parse(mine), b = parse(other);
  if (!a || !b) return false;
  if (a->dtype != kNone && b->dtype != kNone) return false;  // both concrete and not equal
  return a->op == b->op && a->reduce == b->reduce && a->dim == b->dim && a->root == b->root &&
         a->tag == b->tag;
}

std::string CollectiveRequest::describe() const { return describe(trailer()); }

std::string CollectiveRequest::describe(std::span<const std::uint8_t> trailer) {
  const auto fields = parse(trailer);
  return fields ? rankmesh::describe(*fields) : "a malformed request";
}

std::span<const std::uint8_t> CollectiveRequest::trailer_of(std::span<const std::uint8_t> metadata) {
  if (metadata.empty()) return {};
  const std::size_t length = std::size_t{metadata.back()} + 1;
  if (length > metadata.size()) return {};
  const auto trailer = metadata.last(length);
  return parse(trailer) ? trailer : std::span<const std::uint8_t>{};
}

}  // namespace rankmesh
