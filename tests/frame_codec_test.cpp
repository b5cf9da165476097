// The frame wire format: what the encoder lays out, what the decoder accepts, and that every
// malformed, truncated, oversized or out-of-sequence input is an error saying what was wrong.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "channel.hpp"
#include "frame_codec.hpp"
#include "rankmesh/event.hpp"

using namespace rankmesh;
using namespace std::chrono_literals;

namespace {

using Bytes = std::vector<std::uint8_t>;

Tensor patterned(Shape shape, DType dtype, std::uint8_t seed) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* bytes = t.data_as<std::uint8_t>();
  for (std::size_t i = 0; i < t.nbytes(); ++i)
    bytes[i] = static_cast<std::uint8_t>(seed + i * 31 + (i >> 8));
  return t;
}

Frame make_frame(std::uint32_t group, std::uint64_t seq, Bytes metadata,
                 std::vector<Tensor> tensors) {
  Frame f;
  f.header = FrameHeader{group, 7, seq, 3};
  f.metadata = std::move(metadata);
  f.tensors = std::move(tensors);
  return f;
}

Bytes encode_bytes(FrameEncoder& encoder, const Frame& frame, std::uint64_t link_seq) {
  Bytes out;
  for (const iovec& span : encoder.encode(frame, link_seq)) {
    const auto* p = static_cast<const std::uint8_t*>(span.iov_base);
    out.insert(out.end(), p, p + span.iov_len);
  }
  CHECK(out.size() == encoder.size());
  return out;
}

Bytes encode_bytes(const Frame& frame, std::uint64_t link_seq = 0) {
  FrameEncoder encoder;
  return encode_bytes(encoder, frame, link_seq);
}

// Feeds `bytes` in pieces of `chunk` bytes; returns the frames decoded.
std::vector<Frame> decode_all(const Bytes& bytes, std::size_t chunk = SIZE_MAX,
                              FrameLimits limits = {}) {
  FrameDecoder decoder(nullptr, limits);
  std::vector<Frame> frames;
  std::size_t at = 0;
  while (at < bytes.size()) {
    const std::size_t n = std::min(chunk, bytes.size() - at);
    std::size_t used = 0;
    while (used < n) {
      used += decoder.feed({bytes.data() + at + used, n - used});
      if (decoder.ready()) decoder.take(frames.emplace_back());
    }
    at += n;
  }
  CHECK_FALSE(decoder.mid_frame());
  return frames;
}

void check_same(const Frame& got, const Frame& sent) {
  CHECK(got.header.group == sent.header.group);
  CHECK(got.header.op == sent.header.op);
  CHECK(got.header.seq == sent.header.seq);
  CHECK(got.header.src == sent.header.src);
  CHECK(got.metadata == sent.metadata);
  REQUIRE(got.tensors.size() == sent.tensors.size());
  for (std::size_t i = 0; i < sent.tensors.size(); ++i) CHECK(equal(got.tensors[i], sent.tensors[i]));
}

std::vector<Frame> varied_frames() {
  std::vector<Frame> frames;
  frames.push_back(make_frame(0, 0, {}, {}));
  frames.push_back(make_frame(1, 1, Bytes{0x81, 0xa1, 'k', 0x01}, {}));
  std::vector<Tensor> every_dtype;
  for (std::size_t code = 0; code < kDTypeCount; ++code)
    every_dtype.push_back(patterned({2, static_cast<std::int64_t>(code) + 1},
                                    *dtype_from_code(code), static_cast<std::uint8_t>(code)));
  frames.push_back(make_frame(2, 5, Bytes(300, 0x5a), every_dtype));
  frames.push_back(make_frame(3, 9, {}, {patterned({}, DType::f32, 1), patterned({0, 3}, DType::i64, 2),
                                         patterned({1, 1, 1, 1, 1, 1, 1, 3}, DType::u8, 3),
                                         patterned({0}, DType::bf16, 4)}));
  std::vector<Tensor> many;
  for (int i = 0; i < 1000; ++i)
    many.push_back(patterned({i % 5}, DType::i16, static_cast<std::uint8_t>(i)));
  frames.push_back(make_frame(0xffffffffu, ~0ull, Bytes(70000, 1), many));
  frames.back().header.src = -1;
  return frames;
}

template <class F>
std::string error_of(F&& f, Errc* code = nullptr) {
  try {
    f();
  } catch (const Error& error) {
    if (code) *code = error.code();
    return error.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("frame codec: varied frames round-trip, fed whole or in any pieces") {
  const std::vector<Frame> frames = varied_frames();
  FrameEncoder encoder;
  Bytes stream;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const Bytes one = encode_bytes(encoder, frames[i], i);
    stream.insert(stream.end(), one.begin(), one.end());
  }
  for (std::size_t chunk : {std::size_t{1}, std::size_t{3}, std::size_t{52}, std::size_t{4096}, SIZE_MAX}) {
    CAPTURE(chunk);
    const std::vector<Frame> got = decode_all(stream, chunk);
    REQUIRE(got.size() == frames.size());
    for (std::size_t i = 0; i < frames.size(); ++i) check_same(got[i], frames[i]);
  }
}

TEST_CASE("frame codec: the header is little-endian, 52 bytes, starting with RMSH") {
  const Frame f = make_frame(0x01020304, 0x1122334455667788ull, Bytes{9, 9},
                             {patterned({3}, DType::f16, 0)});
  const Bytes b = encode_bytes(f, 0x0a0b);
  REQUIRE(b.size() == 52 + 72 + 2 + 6);
  CHECK(std::string(b.begin(), b.begin() + 4) == "RMSH");
  CHECK(b[4] == 2);   // version
  CHECK(b[8] == 0x0b);  // link sequence number, low byte first
  CHECK(b[9] == 0x0a);
  CHECK(b[16] == 0x04);  // group
  CHECK(b[24] == 0x88);  // op seq
  CHECK(b[36] == 2);   // metadata bytes
  CHECK(b[40] == 1);   // tensors
  CHECK(b[44] == 6);   // payload bytes
  CHECK(b[52] == static_cast<std::uint8_t>(DType::f16));
  CHECK(b[53] == static_cast<std::uint8_t>(DeviceType::cpu));
  CHECK(b[54] == 0);  // device index
  CHECK(b[55] == 0);  // payload inline
  CHECK(b[56] == 1);  // rank
  CHECK(b[60] == 3);  // dim 0
  CHECK(b[68] == 0);  // dims beyond the rank are 0
  CHECK(b[124] == 9);  // metadata follows the descriptors
}

TEST_CASE("frame codec: the encoder points at the frame's own bytes instead of copying them") {
  Frame f = make_frame(1, 1, Bytes(10, 1), {patterned({4}, DType::f32, 0), patterned({0}, DType::f32, 0),
                                            patterned({2}, DType::u8, 0)});
  FrameEncoder encoder;
  const auto spans = encoder.encode(f, 0);
  REQUIRE(spans.size() == 4);  // head, metadata, and the two tensors with bytes
  CHECK(spans[1].iov_base == f.metadata.data());
  CHECK(spans[2].iov_base == f.tensors[0].data());
  CHECK(spans[3].iov_base == f.tensors[2].data());
  CHECK(spans[3].iov_len == 2);
}

TEST_CASE("frame codec: received payloads land in tensors from the allocator") {
  const Frame f = make_frame(1, 1, {}, {patterned({5, 2}, DType::i32, 9)});
  const Bytes b = encode_bytes(f);
  int calls = 0;
  FrameDecoder decoder([&](const Shape& shape, DType dtype) {
    ++calls;
    return Tensor::empty(shape, dtype);
  });
  // next_buffer/commit: bytes go where the decoder says, the payload straight into the tensor.
  std::size_t at = 0;
  while (!decoder.ready()) {
    auto into = decoder.next_buffer();
    REQUIRE(!into.empty());
    std::memcpy(into.data(), b.data() + at, into.size());
    at += into.size();
    decoder.commit(into.size());
  }
  CHECK(at == b.size());
  Frame got;
  got.metadata.reserve(64);
  decoder.take(got);
  CHECK(calls == 1);
  check_same(got, f);
  CHECK(decoder.expected_sequence() == 1);
}

TEST_CASE("frame codec: an allocator that fails names the tensor it could not make") {
  // 1 MiB: more than the small tensors that share one block.
  const Bytes b = encode_bytes(make_frame(1, 1, {}, {patterned({1 << 18}, DType::f32, 2)}));
  FrameDecoder decoder([](const Shape&, DType) -> Tensor { throw std::bad_alloc(); });
  try {
    decoder.feed({b.data(), b.size()});
    FAIL("the decoder took a frame whose tensor it could not allocate");
  } catch (const Error& error) {
    CHECK(error.code() == Errc::limit_exceeded);
    const std::string what = error.what();
    CHECK(what.find("tensor 0") != std::string::npos);
    CHECK(what.find(to_string(Shape{1 << 18})) != std::string::npos);
    CHECK(what.find("float32") != std::string::npos);
  }
}

TEST_CASE("frame codec: a landing withdrawn in the middle of its payload is not written after") {
  // A receive that ends at its deadline withdraws its landing (Channel::land(nullptr)); the
  // frame goes on arriving later, and its bytes must not reach memory the caller has back.
  const Frame f = make_frame(1, 1, {}, {patterned({64}, DType::u8, 3), patterned({256}, DType::f32, 4)});
  const Bytes b = encode_bytes(f);
  Tensor first = Tensor::empty({64}, DType::u8);
  Tensor second = Tensor::empty({256}, DType::f32);
  std::memset(first.data(), 0xee, first.nbytes());
  std::memset(second.data(), 0xee, second.nbytes());
  Landing landing{1, 7, 1, {first, second}};
  FrameDecoder decoder(nullptr);
  decoder.land(&landing);
  // Everything up to half of the second tensor's payload.
  const std::size_t cut = b.size() - second.nbytes() / 2;
  REQUIRE(decoder.feed({b.data(), cut}) == cut);
  REQUIRE(decoder.mid_frame());
  decoder.land(nullptr);
  const Bytes second_before(second.data_as<std::uint8_t>(), second.data_as<std::uint8_t>() + second.nbytes());
  REQUIRE(decoder.feed({b.data() + cut, b.size() - cut}) == b.size() - cut);
  REQUIRE(decoder.ready());
  Frame got;
  decoder.take(got);
  // The first payload, complete before the withdrawal, is where it landed; the second's rest
  // went elsewhere, and the caller's tensor kept what it held at the withdrawal.
  CHECK(got.tensors[0].data() == first.data());
  CHECK(std::memcmp(first.data(), f.tensors[0].data(), first.nbytes()) == 0);
  CHECK(got.tensors[1].data() != second.data());
  CHECK(Bytes(second.data_as<std::uint8_t>(), second.data_as<std::uint8_t>() + second.nbytes()) ==
        second_before);
  CHECK(std::memcmp(second.data_as<std::uint8_t>() + second.nbytes() / 2,
                    Bytes(second.nbytes() / 2, 0xee).data(), second.nbytes() / 2) == 0);
  // The frame itself is whole: the bytes read before the withdrawal moved with it.
  check_same(got, f);
  // The next frame decodes as usual.
  const Bytes next = encode_bytes(make_frame(1, 2, {}, {patterned({8}, DType::u8, 5)}), 1);
  REQUIRE(decoder.feed({next.data(), next.size()}) == next.size());
  REQUIRE(decoder.ready());
  decoder.take(got);
  CHECK(got.tensors[0].nbytes() == 8);
}

TEST_CASE("frame codec: a landing withdrawn and set again within one receive keeps landing") {
  // A receive waits in slices: each ends with land(nullptr), the next lands the same tensors.
  const Frame f = make_frame(1, 1, {}, {patterned({256}, DType::f32, 4)});
  const Bytes b = encode_bytes(f);
  Tensor target = Tensor::empty({256}, DType::f32);
  Landing landing{1, 7, 1, {target}};
  FrameDecoder decoder(nullptr);
  for (std::size_t at = 0; at < b.size(); at += 100) {  // a slice per 100 bytes
    decoder.land(&landing);
    const std::size_t n = std::min<std::size_t>(100, b.size() - at);
    REQUIRE(decoder.feed({b.data() + at, n}) == n);
    decoder.land(nullptr);
  }
  REQUIRE(decoder.ready());
  Frame got;
  decoder.take(got);
  CHECK(got.tensors[0].data() == target.data());
  check_same(got, f);
  // Set again with other memory of the same shape: the frame's rest goes to memory of its own,
  // the bytes so far with it.
  Tensor other = Tensor::empty({256}, DType::f32);
  Landing moved{1, 7, 2, {target}};
  Landing elsewhere{1, 7, 2, {other}};
  const Frame g = make_frame(1, 2, {}, {patterned({256}, DType::f32, 6)});
  const Bytes c = encode_bytes(g, 1);
  const std::size_t half = c.size() - 512;
  decoder.land(&moved);
  REQUIRE(decoder.feed({c.data(), half}) == half);
  decoder.land(nullptr);
  decoder.land(&elsewhere);
  REQUIRE(decoder.feed({c.data() + half, c.size() - half}) == c.size() - half);
  decoder.land(nullptr);
  REQUIRE(decoder.ready());
  decoder.take(got);
  CHECK(got.tensors[0].data() != target.data());
  CHECK(got.tensors[0].data() != other.data());
  check_same(got, g);
}

TEST_CASE("frame codec: every truncation leaves the decoder waiting for more, never a frame") {
  for (const Frame& f : varied_frames()) {
    const Bytes b = encode_bytes(f);
    if (b.size() > 20000) continue;  // the big one is covered by the piecewise round trip
    for (std::size_t n = 0; n < b.size(); ++n) {
      FrameDecoder decoder(nullptr);
      CHECK(decoder.feed({b.data(), n}) == n);
      CHECK_FALSE(decoder.ready());
      CHECK(decoder.mid_frame() == (n != 0));
    }
  }
}

TEST_CASE("frame codec: every single-byte corruption is an error or a frame that re-encodes to it") {
  const Frame f = make_frame(4, 2, Bytes{1, 2, 3},
                             {patterned({2, 3}, DType::f32, 1), patterned({}, DType::i8, 2)});
  const Bytes clean = encode_bytes(f);
  int errors = 0, frames = 0, waiting = 0;
  for (std::size_t at = 0; at < clean.size(); ++at) {
    for (std::uint8_t flip : {0x01, 0x80, 0xff}) {
      Bytes b = clean;
      b[at] ^= flip;
      FrameDecoder decoder(nullptr, FrameLimits{1024, 16, 1 << 20});
      try {
        const std::size_t used = decoder.feed(b);
        if (decoder.ready()) {
          Frame got;
          decoder.take(got);
          CAPTURE(at);
          // A shorter length ends the frame early: what it took re-encodes exactly.
          CHECK(encode_bytes(got) == Bytes(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(used)));
          ++frames;
        } else {
          ++waiting;  // a length grew: the decoder waits for bytes that never came
        }
      } catch (const Error& error) {
        CHECK((error.code() == Errc::malformed || error.code() == Errc::limit_exceeded));
        ++errors;
      }
    }
  }
  CHECK(errors > 0);
  CHECK(frames > 0);  // corrupted header fields, metadata or payload bytes are still a frame
  CHECK(waiting > 0);
}

TEST_CASE("frame codec: link sequence numbers must count up by exactly one") {
  const Frame f = make_frame(1, 1, {}, {});
  FrameDecoder decoder(nullptr);
  Frame got;
  decoder.feed(encode_bytes(f, 0));
  REQUIRE(decoder.ready());
  decoder.take(got);

  SUBCASE("a gap") {
    const std::string what = error_of([&] { decoder.feed(encode_bytes(f, 2)); });
    CHECK(what.find("out of sequence") != std::string::npos);
    CHECK(what.find("frame 1 on this link") != std::string::npos);
    CHECK(what.find("sequence number 2") != std::string::npos);
  }
  SUBCASE("a repeat") {
    CHECK(error_of([&] { decoder.feed(encode_bytes(f, 0)); }).find("out of sequence") !=
          std::string::npos);
  }
  SUBCASE("after an error the decoder stays failed") {
    CHECK_THROWS_AS(decoder.feed(encode_bytes(f, 5)), Error);
    CHECK_THROWS_AS(decoder.feed(encode_bytes(f, 1)), Error);
    CHECK_THROWS_AS(decoder.next_buffer(), Error);
  }
}

TEST_CASE("frame codec: limits on metadata, tensor count and payload are limit_exceeded") {
  const FrameLimits limits{100, 3, 1000};
  auto decode = [&](const Frame& f) { decode_all(encode_bytes(f), SIZE_MAX, limits); };
  Errc code = Errc::malformed;

  CHECK(error_of([&] { decode(make_frame(1, 1, Bytes(101, 0), {})); }, &code)
            .find("metadata of 101 bytes exceeds the limit of 100") != std::string::npos);
  CHECK(code == Errc::limit_exceeded);
  CHECK(error_of([&] {
          decode(make_frame(1, 1, {}, {patterned({1}, DType::u8, 0), patterned({1}, DType::u8, 0),
                                       patterned({1}, DType::u8, 0), patterned({1}, DType::u8, 0)}));
        }, &code).find("4 tensors exceed the limit of 3") != std::string::npos);
  CHECK(code == Errc::limit_exceeded);
  CHECK(error_of([&] { decode(make_frame(1, 1, {}, {patterned({251}, DType::f32, 0)})); }, &code)
            .find("payload of 1004 bytes exceeds the limit of 1000") != std::string::npos);
  CHECK(code == Errc::limit_exceeded);
  // At the limits exactly, frames pass.
  decode(make_frame(1, 1, Bytes(100, 0), {patterned({250}, DType::f32, 0)}));

  // The sender checks the same limits before it writes anything.
  CHECK_THROWS_AS(check_frame_limits(make_frame(1, 1, Bytes(101, 0), {}), limits), Error);
  check_frame_limits(make_frame(1, 1, Bytes(100, 0), {}), limits);
}

TEST_CASE("frame codec: malformed headers and descriptors say what is wrong") {
  const Frame f = make_frame(1, 1, {}, {patterned({2, 2}, DType::f32, 0)});
  const Bytes clean = encode_bytes(f);
  auto with = [&](std::size_t at, std::vector<std::uint8_t> bytes) {
    Bytes b = clean;
    std::copy(bytes.begin(), bytes.end(), b.begin() + static_cast<std::ptrdiff_t>(at));
    Errc code = Errc::limit_exceeded;
    std::string what = error_of([&] { decode_all(b); }, &code);
    CHECK(code == Errc::malformed);
    return what;
  };
  CHECK(with(0, {'G', 'E', 'T', ' '}).find("bad magic 0x20544547") != std::string::npos);
  CHECK(with(4, {3, 0}).find("version 3 is not supported") != std::string::npos);
  CHECK(with(6, {1, 0}).find("unknown frame flags 0x1") != std::string::npos);
  CHECK(with(44, {17}).find("payload length is 17 bytes but its tensors need 16") !=
        std::string::npos);
  CHECK(with(44, {15}).find("need more than the header's payload length of 15") !=
        std::string::npos);
  CHECK(with(52, {200}).find("tensor 0 has dtype code 200") != std::string::npos);
  CHECK(with(53, {1}).find("tensor 0 is described as a cuda tensor") != std::string::npos);
  CHECK(with(53, {9}).find("device type code 9") != std::string::npos);
  CHECK(with(54, {5}).find("tensor 0 is described as cpu:5") != std::string::npos);
  CHECK(with(55, {2}).find("tensor 0 has payload kind 2") != std::string::npos);
  CHECK(with(56, {9}).find("tensor 0 has 9 dimensions (at most 8)") != std::string::npos);
  CHECK(with(57, {1}).find("tensor 0 has a malformed descriptor (padding not zero)") !=
        std::string::npos);
  CHECK(with(60, {0, 0, 0, 0, 0, 0, 0, 0x80}).find("negative dimension") != std::string::npos);
  CHECK(with(60, {0, 0, 0, 0, 0, 0, 0, 0x20}).find("need more than") != std::string::npos);
  // 2^62 x 2 and (2^63 - 1) x 2 elements: more than Shape::numel counts.
  CHECK(with(60, {0, 0, 0, 0, 0, 0, 0, 0x40}).find("more elements than 64 bits count") !=
        std::string::npos);
  CHECK(with(60, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}).find("more elements than 64 bits count") !=
        std::string::npos);
}

TEST_CASE("frame codec: the sender refuses undefined and non-host tensors") {
  FrameEncoder encoder;
  float on_device[4] = {};
  Frame f = make_frame(1, 1, {}, {Tensor::wrap(on_device, {4}, DType::f32,
                                               Device{DeviceType::cuda, 1}, nullptr)});
  Errc code = Errc::malformed;
  CHECK(error_of([&] { encoder.encode(f, 0); }, &code).find("is on cuda:1") != std::string::npos);
  CHECK(code == Errc::invalid_argument);
  f.tensors = {Tensor{}};
  CHECK(error_of([&] { encoder.encode(f, 0); }, &code).find("tensor 0 is undefined") !=
        std::string::npos);
  CHECK(code == Errc::invalid_argument);
}

TEST_CASE("frame codec: wait_payloads_ready waits for each tensor's ready event") {
  Frame f = make_frame(1, 1, {}, {patterned({4}, DType::f32, 0), patterned({4}, DType::f32, 1)});
  auto event = Event::user();
  f.tensors[1].set_ready_event(event);

  Errc code = Errc::malformed;
  try {
    wait_payloads_ready(f, deadline_after(5ms));
    FAIL("no timeout");
  } catch (const ChannelTimeout& timeout) {  // nothing sent: a sender may try again
    CHECK(std::string(timeout.what()).find("tensor 1 was not ready") != std::string::npos);
  }

  std::thread completer([&] {
    std::this_thread::sleep_for(10ms);
    event->complete();
  });
  wait_payloads_ready(f, deadline_after(10s));
  completer.join();

  auto failed = Event::user();
  failed->fail(std::make_exception_ptr(Error(Errc::cancelled, "the producing stream went away")));
  f.tensors[0].set_ready_event(failed);
  CHECK(error_of([&] { wait_payloads_ready(f, deadline_after(1s)); }, &code)
            .find("the producing stream went away") != std::string::npos);
  CHECK(code == Errc::cancelled);
}

TEST_CASE("frame format: what a sender writes parses back, lent payloads included, anything else is named") {
  const FrameLimits limits{.max_metadata_bytes = 64, .max_tensors = 4, .max_payload_bytes = 1024};
  Tensor tensor = Tensor::empty({2, 3}, DType::f32);
  Frame f;
  f.header = FrameHeader{3, 4, 5, 6};
  f.metadata.assign(10, 1);
  f.tensors = {tensor};
  FrameEncoder encoder;
  const auto spans = encoder.encode(f, 7, /*lend_above=*/0);
  CHECK(encoder.prefix_bytes() == kFrameHeaderBytes + kDescriptorBytes + 10);
  CHECK(encoder.size() == encoder.prefix_bytes() + kLentPayloadBytes);
  CHECK(encoder.lent(0));
  CHECK(encoder.lent_bytes() == 24);
  std::vector<std::uint8_t> head(static_cast<const std::uint8_t*>(spans[0].iov_base),
                                 static_cast<const std::uint8_t*>(spans[0].iov_base) + spans[0].iov_len);
  REQUIRE(head.size() == kFrameHeaderBytes + kDescriptorBytes);
  WireHeader parsed;
  REQUIRE_FALSE(parse_frame_header(head.data(), 7, limits, parsed));
  CHECK(parsed.prefix_bytes() == kFrameHeaderBytes + kDescriptorBytes + 10);
  CHECK(parsed.frame.seq == 5);
  CHECK(parsed.payload_bytes == 24);
  TensorDescriptor described;
  REQUIRE_FALSE(parse_descriptor(head.data() + kFrameHeaderBytes, 0, described));
  CHECK(described.shape == Shape{2, 3});
  CHECK(described.nbytes == 24);
  CHECK(described.lent);
  CHECK(described.device == Device{});
  REQUIRE(spans.size() == 3);  // head, metadata, the lent payload's address
  REQUIRE(spans[2].iov_len == kLentPayloadBytes);
  const LentPayload lent = read_lent_payload(static_cast<const std::uint8_t*>(spans[2].iov_base));
  CHECK(lent.address == reinterpret_cast<std::uintptr_t>(tensor.data()));
  CHECK(lent.length == 24);

  CHECK(parse_frame_header(head.data(), 8, limits, parsed).what.find(
            "link sequence number 7 where 8 was expected") != std::string::npos);
  std::uint8_t* dims = head.data() + kFrameHeaderBytes + 8;
  const std::int64_t stray = 1;
  std::memcpy(dims + 8 * 2, &stray, sizeof stray);  // beyond its rank of 2
  CHECK(parse_descriptor(head.data() + kFrameHeaderBytes, 0, described).what ==
        "tensor 0 has a malformed descriptor (a dimension beyond its rank)");
  // Counted as Shape::numel counts: a product that overflows on the way is refused, zero or not.
  const std::int64_t overflowing[3] = {std::int64_t{1} << 62, 2, 0};
  std::memcpy(dims, overflowing, sizeof overflowing);
  head[kFrameHeaderBytes + 4] = 3;
  CHECK(parse_descriptor(head.data() + kFrameHeaderBytes, 0, described).what.find(
            "has more elements than 64 bits count") != std::string::npos);
  const std::uint64_t huge = std::uint64_t{1} << 40;
  std::memcpy(head.data() + 44, &huge, sizeof huge);
  const WireError beyond = parse_frame_header(head.data(), 7, limits, parsed);
  CHECK(beyond.code == Errc::limit_exceeded);
  CHECK(beyond.what.find("exceeds the limit of 1024") != std::string::npos);
  // A byte stream (tcp) takes no lent payloads.
  FrameDecoder decoder(nullptr);
  std::vector<std::uint8_t> stream;
  for (const iovec& span : encoder.encode(f, 0, 0))
    stream.insert(stream.end(), static_cast<const std::uint8_t*>(span.iov_base),
                  static_cast<const std::uint8_t*>(span.iov_base) + span.iov_len);
  try {
    decoder.feed(stream);
    FAIL("a lent payload was accepted from a byte stream");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("tensor 0 is lent") != std::string::npos);
  }
}
