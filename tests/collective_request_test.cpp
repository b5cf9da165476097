// CollectiveRequest (coordinator/collective_request.hpp): the bytes every collective message
// carries, read back from whatever a peer sent — described, compared, and refused when they are
// not a request.
#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "coordinator/collective_request.hpp"
#include "rankmesh/call_site.hpp"

using namespace rankmesh;

namespace {

std::vector<std::uint8_t> with_trailer(std::vector<std::uint8_t> metadata, const CollectiveRequest& request) {
  const auto trailer = request.trailer();
  metadata.insert(metadata.end(), trailer.begin(), trailer.end());
  return metadata;
}

}  // namespace

TEST_CASE("collective request: described as the errors show it, found behind the operation's metadata") {
  std::optional<CallSite> site(std::in_place, "layer3.attn");
  CollectiveRequest request(OpCode::all_gatherv);
  request.dtype(DType::f16).shape(Shape{8, 4096, 2}, 1).dim(1);
  CHECK(request.describe() == "all_gatherv float16 [8, *, 2] along dim 1 at 'layer3.attn'");
  site.reset();  // laid out already: the request keeps its tag
  const std::vector<std::uint8_t> object{0x93, 0x01, 0x02, 0x03};
  const auto metadata = with_trailer(object, request);
  const auto found = CollectiveRequest::trailer_of(metadata);
  REQUIRE(found.size() == request.trailer().size());
  CHECK(request.agrees_with(found));
  CHECK(metadata.size() - found.size() == object.size());
  CHECK(CollectiveRequest(OpCode::broadcast).root(2).describe() == "broadcast (any tensor) root group rank 2");
  CHECK(CollectiveRequest(OpCode::all_reduce).dtype(DType::f32).shape(Shape{4}).reduce(ReduceOp::max).describe() ==
        "all_reduce float32 [4] max");
}

TEST_CASE("collective request: only a receiver passing no tensor accepts any dtype and shape") {
  const auto source = CollectiveRequest(OpCode::broadcast).dtype(DType::f32).shape(Shape{4}).root(0);
  const auto any = CollectiveRequest(OpCode::broadcast).root(0);
  CHECK(any.agrees_with(source.trailer()));
  CHECK(source.agrees_with(any.trailer()));
  CHECK_FALSE(CollectiveRequest(OpCode::broadcast).root(1).agrees_with(source.trailer()));
  CHECK_FALSE(CollectiveRequest(OpCode::broadcast).dtype(DType::f32).shape(Shape{5}).root(0).agrees_with(source.trailer()));
  CHECK_FALSE(CollectiveRequest(OpCode::broadcast).dtype(DType::f16).shape(Shape{4}).root(0).agrees_with(source.trailer()));
  // A tag is never a wildcard.
  CallSite site("x");
  CHECK_FALSE(CollectiveRequest(OpCode::broadcast).root(0).agrees_with(source.trailer()));
}

TEST_CASE("collective request: bytes that end in no request are refused, never read past their end") {
  CHECK(CollectiveRequest::trailer_of({}).empty());
  const std::vector<std::uint8_t> too_long{'Q', 1, 2, 200};  // claims a 200-byte body
  CHECK(CollectiveRequest::trailer_of(too_long).empty());
  const std::vector<std::uint8_t> short_body{'Q', 1, 2, 3};  // a body under the fixed part
  CHECK(CollectiveRequest::trailer_of(short_body).empty());
  auto good = with_trailer({}, CollectiveRequest(OpCode::all_reduce).dtype(DType::f32).shape(Shape{2, 3}));
  auto wrong_marker = good;
  wrong_marker[0] = 'X';
  CHECK(CollectiveRequest::trailer_of(wrong_marker).empty());
  auto too_many_dims = good;
  too_many_dims[5] = 9;  // rank 9 > kMaxRank
  CHECK(CollectiveRequest::trailer_of(too_many_dims).empty());
  CHECK(CollectiveRequest::describe(std::span<const std::uint8_t>(too_many_dims)) == "a malformed request");
  // Random bytes: whatever trailer_of returns lies inside them and describes itself.
  std::mt19937 random(7);
  for (int round = 0; round < 2000; ++round) {
    std::vector<std::uint8_t> bytes(random() % 300);
    for (auto& b : bytes) b = static_cast<std::uint8_t>(random());
    if (!bytes.empty() && round % 2 == 0) bytes[bytes.size() - 1 - std::min<std::size_t>(bytes.size() - 1, bytes.back())] = 'Q';
    const auto found = CollectiveRequest::trailer_of(bytes);
    CHECK(found.size() <= bytes.size());
    if (!found.empty()) CHECK_FALSE(CollectiveRequest::describe(found).empty());
  }
}
