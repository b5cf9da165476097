#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "codec.hpp"

using namespace rankmesh;

namespace {

using Bytes8 = std::vector<std::uint8_t>;

constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kInt64Min = std::numeric_limits<std::int64_t>::min();

bool mentions(const Error& error, const std::string& fragment) {
  return std::string(error.what()).find(fragment) != std::string::npos;
}

template <class T>
void check_refused(const Result<T>& result, Errc code, const std::string& fragment) {
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().code() == code);
  CHECK_MESSAGE(mentions(result.error(), fragment), result.error().what());
}

Bytes8 encoded(const Value& object) {
  Bytes8 out;
  encode(object, out);
  return out;
}

MetaEntry value_entry(std::vector<std::string> path, Value value) {
  MetaEntry entry;
  entry.path = std::move(path);
  entry.value = std::move(value);
  return entry;
}

MetaEntry tensor_entry(std::vector<std::string> path, TensorMeta tensor) {
  MetaEntry entry;
  entry.path = std::move(path);
  entry.kind = MetaEntry::Kind::tensor;
  entry.tensor = tensor;
  return entry;
}

// Every plain value kind, at the edges of the msgpack forms each one can take.
List plain_values() {
  List values{None{},
              true,
              false,
              0,
              1,
              127,
              128,
              255,
              256,
              65535,
              65536,
              std::int64_t{1} << 32,
              kInt64Max,
              -1,
              -32,
              -33,
              -128,
              -129,
              -32768,
              -32769,
              std::int64_t{-1} << 32,
              kInt64Min,
              0.0,
              -0.0,
              1.5,
              -1e300,
              std::numeric_limits<double>::infinity(),
              std::numeric_limits<double>::quiet_NaN(),
              std::numeric_limits<double>::denorm_min(),
              "",
              "x",
              Bytes{},
              Bytes{0, 255},
              List{},
              List{List{List{}}}};
  for (std::size_t length : {31, 32, 255, 256, 65535, 65536}) {
    values.emplace_back(std::string(length, 's'));
    values.emplace_back(Bytes(length, 0xab));
  }
  values.push_back(List(15, Value(1)));
  values.push_back(List(16, Value("sixteen")));
  values.push_back(List(65536, Value(None{})));
  return values;
}

// Metadata with every dtype, every device type, every entry kind, nested paths and both
// values of the sliced flag.
Metadata sample_metadata() {
  Metadata metadata;
  for (std::size_t code = 0; code < kDTypeCount; ++code) {
    const auto dtype = *dtype_from_code(code);
    const auto device = *device_type_from_code(code % kDeviceTypeCount);
    metadata.entries.push_back(tensor_entry(
        {"tensors", to_string(dtype)},
        TensorMeta{device, dtype, Shape{static_cast<std::int64_t>(code), 3}, code % 2 == 1}));
  }
  metadata.entries.push_back(
      tensor_entry({"scalar"}, TensorMeta{DeviceType::cpu, DType::f32, Shape{}, false}));
  metadata.entries.push_back(tensor_entry(
      {"rank8"}, TensorMeta{DeviceType::cuda, DType::i8, Shape{1, 2, 1, 2, 1, 2, 1, 2}, true}));
  metadata.entries.push_back(value_entry({"step"}, 42));
  metadata.entries.push_back(
      value_entry({"a", "b", "c"}, List{1, "two", 3.0, Bytes{4}, None{}, false}));
  MetaEntry empty;
  empty.path = {"a", "empty"};
  empty.kind = MetaEntry::Kind::empty_dict;
  metadata.entries.push_back(empty);
  metadata.entries.push_back(value_entry({""}, "empty key"));
  return metadata;
}

Value nested_lists(std::size_t depth) {
  Value value = List{};
  for (std::size_t i = 1; i < depth; ++i) value = List{value};
  return value;
}

// What decoding bytes must give: an error, or a value that re-encodes to bytes that decode
// to an equal value. Returns false where it gives neither.
template <class Decode>
bool decodes_or_refuses(const Bytes8& bytes, Decode decode) {
  auto decoded = decode(bytes);
  if (!decoded.ok()) {
    const Errc code = decoded.error().code();
    return code == Errc::malformed || code == Errc::limit_exceeded;
  }
  Bytes8 again;
  encode(decoded.value(), again);
  auto redecoded = decode(again);
  return redecoded.ok() && redecoded.value() == decoded.value();
}

Result<Metadata> decode_metadata_default(const Bytes8& bytes) { return decode_metadata(bytes); }
Result<Value> decode_object_default(const Bytes8& bytes) { return decode_object(bytes); }

}  // namespace

TEST_CASE("metadata round-trips: every dtype and device type, every entry kind, nested paths") {
  const Metadata metadata = sample_metadata();
  const auto decoded = decode_metadata(encode(metadata));
  REQUIRE(decoded.ok());
  CHECK(decoded.value() == metadata);
}

TEST_CASE("every plain value kind round-trips inside metadata and as an object") {
  for (const Value& value : plain_values()) {
    const auto object = decode_object(encoded(value));
    REQUIRE(object.ok());
    CHECK(object.value() == value);
  }
  const Metadata metadata{{value_entry({"values"}, plain_values())}};
  const auto decoded = decode_metadata(encode(metadata));
  REQUIRE(decoded.ok());
  CHECK(decoded.value() == metadata);
}

TEST_CASE("a dict with nested tensors survives split, encode, decode and join") {
  auto filled = [](Shape shape, DType dtype) {
    Tensor t = Tensor::empty(shape, dtype);
    for (std::size_t i = 0; i < t.nbytes(); ++i)
      t.data_as<std::uint8_t>()[i] = static_cast<std::uint8_t>(i * 7);
    return t;
  };
  const TensorDict dict{
      {"hidden_states", filled({2, 4}, DType::bf16)},
      {"empty", filled({0, 16}, DType::f32)},
      {"meta", TensorDict{{"step", 3},
                          {"kv", TensorDict{{"k", filled({3}, DType::fp8_e4m3)}}},
                          {"none", TensorDict{}}}},
      {"ids", List{1, 2, 3}},
  };
  const SplitDict parts = split(dict);
  const auto metadata = decode_metadata(encode(parts.metadata));
  REQUIRE(metadata.ok());
  CHECK(metadata.value().entries[1].tensor.shape == Shape{0, 16});
  CHECK(join(metadata.value(), parts.tensors) == dict);
}

TEST_CASE("a dict encoded straight from the dict gives split()'s bytes and tensors") {
  // The send path's encoder must write exactly what encoding split(dict).metadata writes.
  const Tensor a = Tensor::empty({2, 4}, DType::bf16);
  const Tensor b = Tensor::empty({0, 16}, DType::f32);
  const Tensor c = Tensor::empty({3}, DType::i8);
  const TensorDict dicts[] = {
      TensorDict{},
      TensorDict{{"step", 3}, {"temperature", 0.5}, {"name", "x"}, {"none", None{}}},
      TensorDict{{"hidden_states", a},
                 {"empty", b},
                 {"meta", TensorDict{{"step", 3},
                                     {"kv", TensorDict{{"k", c}, {"v", TensorDict{}}}},
                                     {"ids", List{1, List{2.5, "s"}, Bytes{1, 2}}}}},
                 {"none", TensorDict{}},
                 {"last", c}},
  };
  for (const TensorDict& dict : dicts) {
    Bytes8 direct;
    std::vector<const Tensor*> tensors;
    encode(dict, direct, tensors);
    const SplitDict parts = split(dict);
    CHECK(direct == encode(parts.metadata));
    REQUIRE(tensors.size() == parts.tensors.size());
    for (std::size_t i = 0; i < tensors.size(); ++i)
      CHECK(tensors[i]->shares_storage_with(parts.tensors[i]));
  }
  std::vector<const Tensor*> tensors;
  Bytes8 out;
  CHECK_THROWS_WITH_AS(encode(TensorDict{{"outer", TensorDict{{"inner", Tensor{}}}}}, out, tensors),
                       doctest::Contains("'outer.inner' holds an undefined tensor"), Error);
  CHECK_THROWS_WITH_AS(encode(TensorDict{{"l", List{1, TensorDict{}}}}, out, tensors),
                       doctest::Contains("'l' holds a list with a tensor or dict inside"), Error);
}

TEST_CASE("decode_plain_dict builds what decode and join build, or declines") {
  auto filled = [](Shape shape, DType dtype, int seed) {
    Tensor t = Tensor::empty(shape, dtype);
    for (std::size_t i = 0; i < t.nbytes(); ++i)
      t.data_as<std::uint8_t>()[i] = static_cast<std::uint8_t>(i * 7 + seed);
    return t;
  };
  const Allocator empty = [](const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype); };
  const TensorDict dict{
      {"hidden_states", filled({2, 4}, DType::bf16, 1)},
      {"empty", filled({0, 16}, DType::f32, 2)},
      {"meta", TensorDict{{"step", 3}, {"kv", TensorDict{{"k", filled({3}, DType::i8, 3)}}},
                          {"none", TensorDict{}}}},
      {"ids", List{1, List{2.5, "s"}}},
  };
  const SplitDict parts = split(dict);
  std::vector<Tensor> payloads;
  for (const Tensor& t : parts.tensors)
    if (t.numel() != 0) payloads.push_back(t);
  const Bytes8 bytes = encode(parts.metadata);
  const std::optional<TensorDict> plain = decode_plain_dict(bytes, payloads, empty);
  REQUIRE(plain.has_value());
  CHECK(*plain == dict);
  CHECK(plain->at("hidden_states").as<Tensor>().shares_storage_with(payloads[0]));

  SUBCASE("keys of one nested dict need not be adjacent") {
    const Metadata scattered{{value_entry({"a", "x"}, 1), value_entry({"b"}, 2), value_entry({"a", "y"}, 3)}};
    const auto got = decode_plain_dict(encode(scattered), {}, empty);
    REQUIRE(got.has_value());
    CHECK(*got == TensorDict{{"a", TensorDict{{"x", 1}, {"y", 3}}}, {"b", 2}});
  }
  SUBCASE("it declines what the full path must judge") {
    Metadata sliced = parts.metadata;
    sliced.entries[0].tensor.sliced = true;
    CHECK_FALSE(decode_plain_dict(encode(sliced), payloads, empty));
    CHECK_FALSE(decode_plain_dict(bytes, std::span(payloads).first(1), empty));  // a payload missing
    std::vector<Tensor> extra = payloads;
    extra.push_back(filled({1}, DType::f32, 4));
    CHECK_FALSE(decode_plain_dict(bytes, extra, empty));  // one too many
    std::vector<Tensor> wrong = payloads;
    wrong[0] = filled({8}, DType::bf16, 5);  // the right bytes, the wrong shape
    CHECK_FALSE(decode_plain_dict(bytes, wrong, empty));
    const Metadata duplicate{{value_entry({"a"}, 1), value_entry({"a"}, 2)}};
    CHECK_FALSE(decode_plain_dict(encode(duplicate), {}, empty));
    const Metadata through_value{{value_entry({"a"}, 1), value_entry({"a", "b"}, 2)}};
    CHECK_FALSE(decode_plain_dict(encode(through_value), {}, empty));
    CHECK_FALSE(decode_plain_dict(Bytes8{0x92, 0x01}, {}, empty));  // truncated
  }
}

TEST_CASE("the encoding is a msgpack array led by the format version") {
  CHECK(encoded(None{}) == Bytes8{0x92, 0x01, 0xc0});
  CHECK(encode(Metadata{}) == Bytes8{0x92, 0x01, 0x90});
  const Metadata one{{value_entry({"k"}, 5)}};
  CHECK(encode(one) == Bytes8{0x92, 0x01, 0x91, 0x93, 0x00, 0x91, 0xa1, 'k', 0x05});
  const Metadata tensor{
      {tensor_entry({"t"}, TensorMeta{DeviceType::cuda, DType::bf16, Shape{2, 3}, true})}};
  CHECK(encode(tensor) ==
        Bytes8{0x92, 0x01, 0x91, 0x96, 0x01, 0x91, 0xa1, 't', 0x01, 0x02, 0x92, 0x02, 0x03, 0xc3});
}

TEST_CASE("encode replaces the contents of its output and reuses its capacity") {
  Bytes8 out(100, 0xee);
  const auto* storage = out.data();
  encode(Metadata{}, out);
  CHECK(out == Bytes8{0x92, 0x01, 0x90});
  CHECK(out.data() == storage);
  encode(Value(7), out);
  CHECK(out == Bytes8{0x92, 0x01, 0x07});
}

TEST_CASE("objects carry plain values only") {
  CHECK_THROWS_AS(encoded(Tensor::empty({1}, DType::f32)), Error);
  CHECK_THROWS_AS(encoded(TensorDict{{"a", 1}}), Error);
  try {
    encoded(List{1, List{TensorDict{}}});
    FAIL("a dict inside a list was encoded");
  } catch (const Error& error) {
    CHECK(error.code() == Errc::invalid_argument);
  }
}

TEST_CASE("metadata the codec cannot carry is refused at the encoder, naming the key path") {
  const Metadata tensor_as_value{{value_entry({"outer", "inner"}, Tensor::empty({1}, DType::f32))}};
  CHECK_THROWS_WITH_AS(encode(tensor_as_value), doctest::Contains("'outer.inner'"), Error);
  const Metadata no_path{{value_entry({}, 1)}};
  CHECK_THROWS_WITH_AS(encode(no_path), doctest::Contains("empty key path"), Error);
}

TEST_CASE("the decoder reads every msgpack integer, float, string, bytes and array form") {
  struct Case {
    Bytes8 body;
    Value expected;
  };
  const Case cases[] = {
      {{0xcc, 0xff}, 255},
      {{0xcd, 0x01, 0x00}, 256},
      {{0xce, 0x00, 0x01, 0x00, 0x00}, 65536},
      {{0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, kInt64Max},
      {{0xd0, 0x80}, -128},
      {{0xd1, 0x80, 0x00}, -32768},
      {{0xd2, 0xff, 0xff, 0xff, 0xfe}, -2},
      {{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, kInt64Min},
      {{0xd3, 0, 0, 0, 0, 0, 0, 0, 5}, 5},
      {{0xe0}, -32},
      {{0xca, 0x3f, 0xc0, 0x00, 0x00}, 1.5},
      {{0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}, 1.5},
      {{0xa2, 'a', 'b'}, "ab"},
      {{0xd9, 0x02, 'a', 'b'}, "ab"},
      {{0xda, 0x00, 0x02, 'a', 'b'}, "ab"},
      {{0xdb, 0x00, 0x00, 0x00, 0x02, 'a', 'b'}, "ab"},
      {{0xc4, 0x01, 0x09}, Bytes{9}},
      {{0xc5, 0x00, 0x01, 0x09}, Bytes{9}},
      {{0xc6, 0x00, 0x00, 0x00, 0x01, 0x09}, Bytes{9}},
      {{0xdc, 0x00, 0x01, 0xc3}, List{true}},
      {{0xdd, 0x00, 0x00, 0x00, 0x01, 0xc2}, List{false}},
  };
  for (const Case& c : cases) {
    Bytes8 bytes{0x92, 0x01};
    bytes.insert(bytes.end(), c.body.begin(), c.body.end());
    const auto decoded = decode_object(bytes);
    REQUIRE_MESSAGE(decoded.ok(), decoded.error().what());
    CHECK(decoded.value() == c.expected);
  }
}

TEST_CASE("every truncation of a valid encoding is an error") {
  const Bytes8 metadata = encode(sample_metadata());
  for (std::size_t size = 0; size < metadata.size(); ++size) {
    const Bytes8 prefix(metadata.begin(), metadata.begin() + static_cast<std::ptrdiff_t>(size));
    const auto decoded = decode_metadata(prefix);
    REQUIRE_FALSE(decoded.ok());
    CHECK(decoded.error().code() == Errc::malformed);
  }
  const Bytes8 object = encoded(List{1, "two", Bytes{3}, List{4.0, None{}}, kInt64Min});
  for (std::size_t size = 0; size < object.size(); ++size) {
    const Bytes8 prefix(object.begin(), object.begin() + static_cast<std::ptrdiff_t>(size));
    CHECK_FALSE(decode_object(prefix).ok());
  }
}

TEST_CASE(
    "every single-byte mutation of a valid encoding gives an error or a value, never a crash") {
  // Small, yet holding every entry kind and value form, so that all 256 values at every
  // position stay quick under the sanitizers.
  MetaEntry empty;
  empty.path = {"a", "e"};
  empty.kind = MetaEntry::Kind::empty_dict;
  const Bytes8 metadata = encode(Metadata{{
      tensor_entry({"a", "t"}, TensorMeta{DeviceType::cuda, DType::bf16, Shape{2, 300}, true}),
      value_entry({"v"}, List{1, -300, "s", Bytes{3}, 4.5, None{}, false}),
      empty,
  }});
  const Bytes8 object = encoded(List{1, -300, "two", Bytes{3}, List{4.0, None{}}, true});
  std::size_t wrong = 0;
  for (std::size_t at = 0; at < metadata.size(); ++at) {
    for (int byte = 0; byte < 256; ++byte) {
      Bytes8 mutated = metadata;
      mutated[at] = static_cast<std::uint8_t>(byte);
      wrong += !decodes_or_refuses(mutated, decode_metadata_default);
    }
  }
  for (std::size_t at = 0; at < object.size(); ++at) {
    for (int byte = 0; byte < 256; ++byte) {
      Bytes8 mutated = object;
      mutated[at] = static_cast<std::uint8_t>(byte);
      wrong += !decodes_or_refuses(mutated, decode_object_default);
    }
  }
  CHECK(wrong == 0);
}

TEST_CASE("a huge declared count in a tiny input is refused before anything is reserved") {
  // Each of these would make a reserve-first decoder (msgpack::unpack) allocate gigabytes.
  check_refused(decode_metadata(Bytes8{0x92, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff}), Errc::malformed,
                "array of 4294967295 elements cannot fit in the 0 bytes left at byte offset 2");
  check_refused(decode_object(Bytes8{0x92, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0}),
                Errc::malformed, "cannot fit");
  check_refused(decode_object(Bytes8{0x92, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}),
                Errc::malformed,
                "a string of 4294967295 bytes runs past the end (1 bytes left) at byte offset 2");
  check_refused(decode_object(Bytes8{0x92, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff}), Errc::malformed,
                "bytes of 4294967295 bytes runs past the end");
  check_refused(decode_metadata(Bytes8{0x92, 0x01, 0x91, 0x93, 0x00, 0xdc, 0xff, 0xff}),
                Errc::malformed, "at byte offset 5");
  check_refused(decode_metadata(Bytes8{0xdd, 0xff, 0xff, 0xff, 0xff}), Errc::malformed,
                "at byte offset 0");
}

TEST_CASE("a depth bomb is refused at max_depth") {
  Bytes8 object{0x92, 0x01};
  object.insert(object.end(), 1'000'000, 0x91);
  object.push_back(0xc0);
  check_refused(decode_object(object), Errc::limit_exceeded,
                "a list nests deeper than max_depth 32 at byte offset 34");

  Bytes8 metadata{0x92, 0x01, 0x91, 0x93, 0x00, 0x91, 0xa1, 'k'};
  metadata.insert(metadata.end(), 1'000'000, 0x91);
  metadata.push_back(0xc0);
  check_refused(decode_metadata(metadata), Errc::limit_exceeded, "max_depth 32");
}

TEST_CASE("each limit can be set and is enforced") {
  SUBCASE("max_metadata_bytes: the size of the encoded input") {
    const Bytes8 bytes = encode(sample_metadata());
    CHECK(decode_metadata(bytes, FrameLimits{.max_metadata_bytes = bytes.size()}).ok());
    check_refused(decode_metadata(bytes, FrameLimits{.max_metadata_bytes = bytes.size() - 1}),
                  Errc::limit_exceeded, std::to_string(bytes.size()) + " bytes exceed max_metadata_bytes");
    check_refused(decode_object(encoded(1), FrameLimits{.max_metadata_bytes = 2}), Errc::limit_exceeded,
                  "max_metadata_bytes 2");
  }
  SUBCASE("max_depth: nested lists, and key paths together with the lists below them") {
    const Bytes8 lists = encoded(nested_lists(5));
    CHECK(decode_object(lists, FrameLimits{.max_depth = 5}).ok());
    check_refused(decode_object(lists, FrameLimits{.max_depth = 4}), Errc::limit_exceeded,
                  "max_depth 4");

    const Bytes8 path = encode(Metadata{{value_entry({"a", "b", "c", "d", "e"}, 1)}});
    CHECK(decode_metadata(path, FrameLimits{.max_depth = 5}).ok());
    check_refused(decode_metadata(path, FrameLimits{.max_depth = 4}), Errc::limit_exceeded,
                  "a key path of 5 keys exceeds max_depth 4");

    const Bytes8 both = encode(Metadata{{value_entry({"a", "b", "c"}, nested_lists(2))}});
    CHECK(decode_metadata(both, FrameLimits{.max_depth = 5}).ok());
    check_refused(decode_metadata(both, FrameLimits{.max_depth = 4}), Errc::limit_exceeded,
                  "max_depth 4");
  }
  SUBCASE("max_entries: entries, key path components and list items, in total") {
    // 3 entries + 4 keys + 2 list items.
    const Bytes8 bytes = encode(Metadata{
        {value_entry({"a"}, 1), value_entry({"b", "c"}, List{1, 2}), value_entry({"d"}, "x")}});
    CHECK(decode_metadata(bytes, FrameLimits{.max_entries = 9}).ok());
    check_refused(decode_metadata(bytes, FrameLimits{.max_entries = 8}), Errc::limit_exceeded,
                  "more than max_entries 8");
    const Bytes8 list = encoded(List(100, Value(0)));
    CHECK(decode_object(list, FrameLimits{.max_entries = 100}).ok());
    check_refused(decode_object(list, FrameLimits{.max_entries = 99}), Errc::limit_exceeded,
                  "max_entries 99");
  }
  SUBCASE("max_rank: dimensions of one tensor") {
    const Bytes8 bytes = encode(Metadata{
        {tensor_entry({"t"}, TensorMeta{DeviceType::cpu, DType::f32, Shape{1, 2, 3}, false})}});
    CHECK(decode_metadata(bytes, FrameLimits{.max_rank = 3}).ok());
    check_refused(decode_metadata(bytes, FrameLimits{.max_rank = 2}), Errc::limit_exceeded,
                  "a shape of rank 3 exceeds max_rank 2");
  }
  SUBCASE("max_payload_bytes: declared tensor bytes, summed over the tensors") {
    const Bytes8 bytes = encode(Metadata{{
        tensor_entry({"a"}, TensorMeta{DeviceType::cpu, DType::f32, Shape{2, 3}, false}),
        tensor_entry({"b"}, TensorMeta{DeviceType::cpu, DType::f64, Shape{5}, false}),
    }});
    CHECK(decode_metadata(bytes, FrameLimits{.max_payload_bytes = 64}).ok());
    check_refused(
        decode_metadata(bytes, FrameLimits{.max_payload_bytes = 63}), Errc::limit_exceeded,
        "tensor of shape [5] float64 brings the declared payload past max_payload_bytes 63");
  }
}

TEST_CASE("a shape beyond Shape::kMaxRank is refused even when max_rank allows it") {
  // [1, [[1, ["t"], 0, 0, [1 x 9], false]]]
  Bytes8 bytes{0x92, 0x01, 0x91, 0x96, 0x01, 0x91, 0xa1, 't', 0x00, 0x00, 0x99};
  bytes.insert(bytes.end(), 9, 0x01);
  bytes.push_back(0xc2);
  check_refused(decode_metadata(bytes, FrameLimits{.max_rank = 100}), Errc::limit_exceeded,
                "a shape of rank 9 exceeds max_rank 8");
}

TEST_CASE("declared payloads that overflow 64 bits are refused") {
  const std::int64_t half = std::int64_t{1} << 62;
  FrameLimits unlimited;
  unlimited.max_payload_bytes = std::numeric_limits<std::uint64_t>::max();
  const Bytes8 elements = encode(Metadata{
      {tensor_entry({"t"}, TensorMeta{DeviceType::cpu, DType::u8, Shape{half, 4}, false})}});
  check_refused(decode_metadata(elements, unlimited), Errc::limit_exceeded, "max_payload_bytes");
  const Bytes8 bytes = encode(
      Metadata{{tensor_entry({"t"}, TensorMeta{DeviceType::cpu, DType::f64, Shape{half}, false})}});
  check_refused(decode_metadata(bytes, unlimited), Errc::limit_exceeded, "max_payload_bytes");
  const Bytes8 sum = encode(Metadata{{
      tensor_entry({"a"}, TensorMeta{DeviceType::cpu, DType::u8, Shape{kInt64Max}, false}),
      tensor_entry({"b"}, TensorMeta{DeviceType::cpu, DType::u8, Shape{kInt64Max}, false}),
      tensor_entry({"c"}, TensorMeta{DeviceType::cpu, DType::u8, Shape{kInt64Max}, false}),
  }});
  check_refused(decode_metadata(sum, unlimited), Errc::limit_exceeded, "max_payload_bytes");
}

TEST_CASE("another format version is refused, naming it") {
  check_refused(decode_object(Bytes8{0x92, 0x02, 0xc0}), Errc::malformed,
                "format version 2 is not supported (this build reads version 1) at byte offset 1");
  check_refused(decode_metadata(Bytes8{0x93, 0x07, 0x90, 0x90}), Errc::malformed,
                "format version 7");
  check_refused(decode_metadata(Bytes8{0x92, 0xa1, '1', 0x90}), Errc::malformed,
                "expected an integer for the format version, found a string");
  check_refused(decode_metadata(Bytes8{0x93, 0x01, 0x90, 0x90}), Errc::malformed,
                "the top-level array has 3 fields, expected 2");
  check_refused(decode_metadata(Bytes8{0x90}), Errc::malformed, "the top-level array is empty");
  check_refused(decode_metadata(Bytes8{0x01}), Errc::malformed,
                "expected an array for the top level");
  check_refused(decode_metadata(Bytes8{}), Errc::malformed, "input ends early");
}

TEST_CASE("what the format does not allow is malformed, with the byte offset") {
  // Prefix [1, [[kind, ["t"], ...: the entry's fields start at offset 5.
  auto entry = [](Bytes8 fields) {
    Bytes8 bytes{0x92, 0x01, 0x91};
    bytes.reserve(bytes.size() + fields.size());
    for (std::uint8_t b : fields) bytes.push_back(b);
    return bytes;
  };
  SUBCASE("codes out of range") {
    check_refused(decode_metadata(entry({0x96, 0x01, 0x91, 0xa1, 't', 0x04, 0x00, 0x90, 0xc2})),
                  Errc::malformed, "device type code 4 is unknown at byte offset 8");
    check_refused(decode_metadata(entry({0x96, 0x01, 0x91, 0xa1, 't', 0x00, 0x0c, 0x90, 0xc2})),
                  Errc::malformed, "dtype code 12 is unknown at byte offset 9");
    check_refused(decode_metadata(entry({0x96, 0x01, 0x91, 0xa1, 't', 0xff, 0x00, 0x90, 0xc2})),
                  Errc::malformed, "device type code -1");
    check_refused(decode_metadata(entry({0x92, 0x03, 0x91, 0xa1, 't'})), Errc::malformed,
                  "entry kind 3 is unknown at byte offset 4");
  }
  SUBCASE("negative dimensions") {
    check_refused(
        decode_metadata(entry({0x96, 0x01, 0x91, 0xa1, 't', 0x00, 0x00, 0x92, 0x02, 0xff, 0xc2})),
        Errc::malformed, "dimension -1 is negative at byte offset 12");
  }
  SUBCASE("an unsigned integer above INT64_MAX") {
    check_refused(decode_object(Bytes8{0x92, 0x01, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0}),
                  Errc::malformed,
                  "unsigned integer 9223372036854775808 exceeds INT64_MAX at byte offset 2");
  }
  SUBCASE("maps, ext and the reserved byte") {
    for (std::uint8_t tag :
         {0x80, 0x81, 0xde, 0xdf, 0xc1, 0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8}) {
      CAPTURE(int(tag));
      const auto decoded =
          decode_object(Bytes8{0x92, 0x01, tag, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
      check_refused(decoded, Errc::malformed, "unsupported msgpack type");
      check_refused(decoded, Errc::malformed, "at byte offset 2");
    }
  }
  SUBCASE("trailing bytes") {
    check_refused(decode_object(Bytes8{0x92, 0x01, 0xc0, 0xc0, 0xc0}), Errc::malformed,
                  "2 trailing bytes at byte offset 3");
    Bytes8 metadata = encode(sample_metadata());
    metadata.push_back(0);
    check_refused(decode_metadata(metadata), Errc::malformed, "1 trailing bytes");
  }
  SUBCASE("fields that do not match the entry kind") {
    check_refused(decode_metadata(entry({0x92, 0x00, 0x91, 0xa1, 't'})), Errc::malformed,
                  "an entry of kind 0 has 2 fields, expected 3 at byte offset 3");
    check_refused(decode_metadata(entry({0x93, 0x02, 0x91, 0xa1, 't', 0xc0})), Errc::malformed,
                  "an entry of kind 2 has 3 fields, expected 2");
    check_refused(decode_metadata(entry({0x90})), Errc::malformed, "a metadata entry is empty");
  }
  SUBCASE("a key path that is empty or not made of strings") {
    check_refused(decode_metadata(entry({0x92, 0x02, 0x90})), Errc::malformed,
                  "a key path is empty at byte offset 5");
    check_refused(decode_metadata(entry({0x92, 0x02, 0x91, 0x01})), Errc::malformed,
                  "expected a string for a key, found an integer at byte offset 6");
  }
  SUBCASE("a sliced flag that is not a bool") {
    check_refused(decode_metadata(entry({0x96, 0x01, 0x91, 0xa1, 't', 0x00, 0x00, 0x90, 0x01})),
                  Errc::malformed, "expected a bool for the sliced flag");
  }
}
