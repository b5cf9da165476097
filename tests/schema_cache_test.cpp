// The schema cache of tensor-dict channels (lib/src/schema_cache.hpp), one pair at a time: what
// travels (definition or use, how many bytes), that the receiver rebuilds exactly the dict that
// was sent, and that a receiver never decodes a frame by a schema other than the sender's.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "codec.hpp"
#include "schema_cache.hpp"

using namespace rankmesh;

namespace {

Tensor filled(std::int64_t n, float value, DType dtype = DType::f32) {
  Tensor t = Tensor::empty({n}, dtype);
  std::memset(t.data(), static_cast<int>(value), t.nbytes());
  return t;
}

Tensor allocate(const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype); }

// The benchmark's small dict: 4 float32 tensors of 256 B, an int and a float.
TensorDict small_dict(std::int64_t step) {
  return TensorDict{{"input_ids", filled(64, 1)}, {"positions", filled(64, 2)},
                    {"hidden", filled(64, 3)},    {"residual", filled(64, 4)},
                    {"step", step},               {"scale", 0.5}};
}

// One direction of one pair: what the sender writes, the receiver takes in and rebuilds.
struct Pair {
  SchemaSender sender;
  SchemaReceiver receiver;
  std::vector<std::uint8_t> bytes;
  std::vector<Tensor> tensors;

  // Encodes `dict`; true when the frame is a definition.
  bool send(const TensorDict& dict) {
    std::vector<const Tensor*> listed;
    sender.encode(dict, bytes, listed);
    // Tensors without elements never travel (their shape is in the metadata), as in p2p.
    tensors.clear();
    for (const Tensor* t : listed)
      if (t->numel() != 0) tensors.push_back(*t);
    if (!SchemaReceiver::is_cached_frame(bytes)) throw std::runtime_error("a plain frame");
    return bytes[1] == 'D';
  }
  // The receiver's side of the last frame: taken in, then read both ways (fast and full).
  TensorDict receive() {
    receiver.take_in(bytes);
    std::optional<TensorDict> fast = receiver.read_dict(bytes, tensors, allocate);
    Result<Metadata> metadata = receiver.metadata(bytes);
    if (!metadata.ok()) throw metadata.error();
    std::vector<Tensor> all;
    std::size_t next = 0;
    for (const MetaEntry& entry : metadata.value().entries)
      if (entry.kind == MetaEntry::Kind::tensor)
        all.push_back(entry.tensor.shape.numel() == 0
                          ? Tensor::empty(entry.tensor.shape, entry.tensor.dtype)
                          : tensors.at(next++));
    TensorDict joined = join(std::move(metadata.value()), std::move(all));
    // Assertions here would nest inside the callers' CHECKs: a failure throws instead.
    if (!fast) throw std::runtime_error("the fast path refused a frame the full path decodes");
    if (!(*fast == joined)) throw std::runtime_error("the fast and full paths built different dicts");
    return *fast;
  }
  // Round trip: the dict comes back equal; returns whether it travelled as a definition.
  bool round_trip(const TensorDict& dict) {
    const bool defined = send(dict);
    if (!(receive() == dict)) throw std::runtime_error("the dict came back different");
    return defined;
  }
};

}  // namespace

TEST_CASE("schema cache: the first dict defines its schema, the next ones of it are uses of at most "
          "48 bytes") {
  Pair pair;
  CHECK(pair.round_trip(small_dict(0)));
  const std::size_t definition_bytes = pair.bytes.size();
  for (std::int64_t step = 1; step < 5; ++step) {
    CHECK_FALSE(pair.round_trip(small_dict(step)));
    CHECK(pair.bytes.size() <= 48);
  }
  MESSAGE("small dict metadata: definition " << definition_bytes << " B, steady state "
                                             << pair.bytes.size() << " B");
  CHECK(pair.sender.definitions() == 1);
  CHECK(pair.receiver.definitions() == 1);
}

TEST_CASE("schema cache: a dict whose keys change in place is a new schema, though it is the same "
          "object (and its copies, moves and nested dicts are followed)") {
  // The sender skips comparing the keys of a dict whose structure it matched before: every
  // insertion and erasure must make that structure new, at every level, and a copy of a dict
  // must carry its keys' structure, not another's.
  Pair pair;
  TensorDict dict{{"x", filled(4, 1)}, {"n", 1}, {"inner", TensorDict{{"y", filled(2, 2)}, {"z", 3}}}};
  CHECK(pair.round_trip(dict));
  CHECK_FALSE(pair.round_trip(dict));
  dict.set("n", 2);  // a value: the same schema
  CHECK_FALSE(pair.round_trip(dict));
  dict.erase("n");
  dict.set("m", 2);  // as many keys, one other
  CHECK(pair.round_trip(dict));
  CHECK_FALSE(pair.round_trip(dict));
  TensorDict& inner = dict.find("inner")->as<TensorDict>();
  inner.erase("z");
  inner.set("w", 3);  // a nested dict changed in place
  CHECK(pair.round_trip(dict));
  TensorDict copy = dict;  // the same keys: the same schema
  CHECK_FALSE(pair.round_trip(copy));
  copy.erase("x");
  copy.set("x", filled(4, 1));  // the same keys, in another order
  CHECK(pair.round_trip(copy));
  TensorDict moved = std::move(copy);
  CHECK_FALSE(pair.round_trip(moved));
  copy = TensorDict{{"inner", TensorDict{{"y", filled(2, 2)}, {"w", 3}}}, {"m", 2}, {"x", filled(4, 1)}};
  CHECK_FALSE(pair.round_trip(copy));  // built anew with the same keys: compared, and equal
  copy = std::move(dict);  // the third schema's order, still cached
  CHECK_FALSE(pair.round_trip(copy));
  CHECK(copy.size() == 3);
  CHECK(pair.sender.definitions() == 4);
}

TEST_CASE("schema cache: a received dict changed by its receiver leaves the cached schema as it "
          "was (received dicts share the schema's keys until they change theirs)") {
  Pair pair;
  TensorDict sent{{"x", filled(4, 1)}, {"n", 1}, {"inner", TensorDict{{"y", filled(2, 2)}}}};
  pair.send(sent);
  TensorDict first = pair.receive();
  CHECK_FALSE(pair.send(sent));  // a use of the schema
  TensorDict second = pair.receive();
  first.set("added", 2);
  CHECK(first.erase("x"));
  first.find("inner")->as<TensorDict>().set("z", 3);
  second.set("n", 7);
  CHECK_FALSE(pair.send(sent));
  TensorDict third = pair.receive();
  CHECK(third == sent);
  CHECK(second.size() == 3);
  CHECK(second.at("inner").as<TensorDict>().size() == 1);
  CHECK(first.size() == 3);
  CHECK_FALSE(first.contains("x"));
}

TEST_CASE("schema cache: a scalar leaf takes every integer width and any other kind within one "
          "schema") {
  // The receiver's prototype keeps the kind of the value the schema was learnt from (an int
  // here) and assigns later ints in place; every msgpack width must come back exact, and a
  // value of another kind must replace the placeholder, also after the kind changed back.
  Pair pair;
  CHECK(pair.round_trip(TensorDict{{"step", 0}, {"scale", 0.5}}));
  const std::int64_t ints[] = {127,        128,         255,          256,        65535,
                               65536,      4294967295,  4294967296,   -1,         -32,
                               -33,        -128,        -129,         -32768,     -32769,
                               -2147483648LL, -2147483649LL, std::numeric_limits<std::int64_t>::max(),
                               std::numeric_limits<std::int64_t>::min()};
  for (std::int64_t step : ints) {
    const TensorDict dict{{"step", step}, {"scale", 0.5}};
    CHECK_FALSE(pair.round_trip(dict));
    CHECK(pair.receive().at("step").as<std::int64_t>() == step);
  }
  const Value others[] = {Value(2.5), Value("text"), Value(None{}), Value(true), Value(7),
                          Value(List{1, 2}), Value(-7)};
  for (const Value& step : others) {
    CHECK_FALSE(pair.round_trip(TensorDict{{"step", step}, {"scale", 0.5}}));
    CHECK_FALSE(pair.round_trip(TensorDict{{"step", 3}, {"scale", step}}));
  }
  CHECK(pair.sender.definitions() == 1);
}

TEST_CASE("schema cache: shapes and values change within a schema; keys, dtypes, ranks, devices "
          "and nesting make a new one") {
  Pair pair;
  const TensorDict base{{"x", Tensor::empty({2, 3}, DType::f16)}, {"n", 1}, {"inner", TensorDict{{"y", filled(4, 1)}}}};
  CHECK(pair.round_trip(base));
  // Same schema: other shapes, other values (even of another type), an empty tensor.
  CHECK_FALSE(pair.round_trip(TensorDict{{"x", Tensor::empty({7, 0}, DType::f16)}, {"n", "text"},
                                         {"inner", TensorDict{{"y", filled(9, 2)}}}}));
  CHECK_FALSE(pair.round_trip(TensorDict{{"x", Tensor::empty({1, 1}, DType::f16)},
                                         {"n", List{None{}, true, 1.0, Bytes{1, 2}}},
                                         {"inner", TensorDict{{"y", filled(1, 3)}}}}));
  // Each of these is another schema.
  const TensorDict others[] = {
      TensorDict{{"x", Tensor::empty({2, 3}, DType::f32)}, {"n", 1}, {"inner", TensorDict{{"y", filled(4, 1)}}}},
      TensorDict{{"x", Tensor::empty({6}, DType::f16)}, {"n", 1}, {"inner", TensorDict{{"y", filled(4, 1)}}}},
      TensorDict{{"x", Tensor::empty({2, 3}, DType::f16)}, {"m", 1}, {"inner", TensorDict{{"y", filled(4, 1)}}}},
      TensorDict{{"n", 1}, {"x", Tensor::empty({2, 3}, DType::f16)}, {"inner", TensorDict{{"y", filled(4, 1)}}}},
      TensorDict{{"x", Tensor::empty({2, 3}, DType::f16)}, {"n", filled(1, 1)}, {"inner", TensorDict{{"y", filled(4, 1)}}}},
      TensorDict{{"x", Tensor::empty({2, 3}, DType::f16)}, {"n", 1}, {"inner", TensorDict{}}},
      TensorDict{{"x", Tensor::empty({2, 3}, DType::f16)}, {"n", 1}, {"inner", TensorDict{{"y", 1}}}},
      TensorDict{{"x", Tensor::empty({2, 3}, DType::f16)}, {"n", 1}},
  };
  std::uint64_t definitions = 1;
  for (const TensorDict& other : others) {
    CHECK(pair.round_trip(other));
    CHECK(pair.sender.definitions() == ++definitions);
  }
  CHECK(pair.receiver.definitions() == definitions);
}

TEST_CASE("schema cache: alternating schemas stay cached; beyond the bound the least recently used "
          "one is defined again") {
  Pair pair;
  auto dict_of = [](std::size_t schema, std::int64_t step) {
    return TensorDict{{"schema" + std::to_string(schema), filled(4, 1)}, {"step", step}};
  };
  for (std::size_t s = 0; s < kCachedSchemas; ++s) {
    const bool defined = pair.round_trip(dict_of(s, 0));
    CHECK(defined);
  }
  for (std::int64_t step = 1; step < 3; ++step)
    for (std::size_t s = 0; s < kCachedSchemas; ++s) {
      const bool defined = pair.round_trip(dict_of(s, step));
      CHECK_FALSE(defined);
    }
  // One more schema evicts schema 0, the least recently used; 1.. stay.
  CHECK(pair.round_trip(dict_of(kCachedSchemas, 0)));
  CHECK_FALSE(pair.round_trip(dict_of(1, 9)));
  CHECK(pair.round_trip(dict_of(0, 9)));
  CHECK(pair.sender.definitions() == kCachedSchemas + 2);
}

TEST_CASE("schema cache: a definition taken in from a frame that was never delivered still serves "
          "the uses after it") {
  Pair pair;
  pair.send(small_dict(0));
  pair.receiver.take_in(pair.bytes);  // discarded: its receive timed out
  pair.receiver.take_in(pair.bytes);  // the same frame again (put back and fetched): no change
  CHECK(pair.receiver.definitions() == 1);
  CHECK_FALSE(pair.send(small_dict(1)));
  const TensorDict got = pair.receive();
  CHECK(got == small_dict(1));
}

TEST_CASE("schema cache: a use whose definition the receiver lacks is a mismatch naming both "
          "definitions, never another schema's dict") {
  Pair pair;
  pair.round_trip(TensorDict{{"a", filled(4, 1)}});
  // The sender forgets (a failed send) and defines anew in the same slot; that frame is lost.
  pair.sender.forget();
  CHECK(pair.send(TensorDict{{"b", filled(4, 1)}}));
  CHECK_FALSE(pair.send(TensorDict{{"b", filled(4, 2)}}));
  pair.receiver.take_in(pair.bytes);
  CHECK_FALSE(pair.receiver.read_dict(pair.bytes, pair.tensors, allocate).has_value());
  Result<Metadata> refused = pair.receiver.metadata(pair.bytes);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code() == Errc::mismatch);
  const std::string text = refused.error().what();
  CHECK_MESSAGE(text.find("definition #2") != std::string::npos, text);
  CHECK_MESSAGE(text.find("holds definition #1") != std::string::npos, text);
  // A receiver that never took anything in names that too.
  SchemaReceiver fresh;
  Result<Metadata> none = fresh.metadata(pair.bytes);
  REQUIRE_FALSE(none.ok());
  CHECK_MESSAGE(std::string(none.error().what()).find("holds none") != std::string::npos,
                none.error().what());
}

TEST_CASE("schema cache: after forget() every schema is defined again and the receiver follows") {
  Pair pair;
  CHECK(pair.round_trip(small_dict(0)));
  CHECK_FALSE(pair.round_trip(small_dict(1)));
  pair.sender.forget();
  CHECK(pair.round_trip(small_dict(2)));
  CHECK_FALSE(pair.round_trip(small_dict(3)));
  CHECK(pair.sender.definitions() == 2);
}

TEST_CASE("schema cache: hostile cached frames are errors naming what is wrong, and leave the "
          "receiver serving") {
  Pair pair;
  pair.round_trip(small_dict(0));
  pair.send(small_dict(1));
  const std::vector<std::uint8_t> use = pair.bytes;
  struct Case {
    std::vector<std::uint8_t> bytes;
    const char* names;
  };
  std::vector<Case> cases = {
      {{0xc1}, "ends early"},
      {{0xc1, 'X', 0, 1}, "cached frame kind"},
      {{0xc1, 'U', 9, 1}, "schema slot 9 is out of range"},
      {{0xc1, 'U', 0, 0}, "definition 0"},
      {{0xc1, 'U', 0, 1, 4}, "ends early"},
  };
  std::vector<std::uint8_t> trailing = use;
  trailing.push_back(0);
  cases.push_back({trailing, "trailing"});
  for (const Case& c : cases) {
    CAPTURE(c.names);
    pair.receiver.take_in(c.bytes);
    CHECK_FALSE(pair.receiver.read_dict(c.bytes, pair.tensors, allocate).has_value());
    Result<Metadata> refused = pair.receiver.metadata(c.bytes);
    REQUIRE_FALSE(refused.ok());
    CHECK_MESSAGE(std::string(refused.error().what()).find(c.names) != std::string::npos,
                  refused.error().what());
  }
  // A definition whose entries no dict writes in this order is refused, and its uses say so.
  Metadata odd;
  odd.entries.push_back(MetaEntry{{"a", "x"}, MetaEntry::Kind::value, Value(1), {}});
  odd.entries.push_back(MetaEntry{{"b"}, MetaEntry::Kind::value, Value(2), {}});
  odd.entries.push_back(MetaEntry{{"a", "y"}, MetaEntry::Kind::value, Value(3), {}});
  std::vector<std::uint8_t> definition{0xc1, 'D', 1, 7};
  const std::vector<std::uint8_t> plain = encode(odd);
  definition.insert(definition.end(), plain.begin(), plain.end());
  pair.receiver.take_in(definition);
  Result<Metadata> refused = pair.receiver.metadata(std::vector<std::uint8_t>{0xc1, 'U', 1, 7, 1, 2, 3});
  REQUIRE_FALSE(refused.ok());
  CHECK_MESSAGE(std::string(refused.error().what()).find("refused") != std::string::npos,
                refused.error().what());
  // The pair still works.
  pair.bytes = use;
  const TensorDict got = pair.receive();
  CHECK(got == small_dict(1));
}

TEST_CASE("schema cache: random dicts and schema changes round-trip equal to what was sent") {
  std::mt19937 random(12345);
  auto pick = [&](int n) { return static_cast<int>(random() % static_cast<unsigned>(n)); };
  const DType dtypes[] = {DType::f32, DType::f16, DType::i64, DType::u8};
  auto make = [&](int schema, int depth, auto& self) -> TensorDict {
    std::mt19937 shape_random(static_cast<unsigned>(schema));  // keys and kinds follow the schema
    TensorDict dict;
    const int keys = 1 + static_cast<int>(shape_random() % 4);
    for (int k = 0; k < keys; ++k) {
      const std::string key = "k" + std::to_string(shape_random() % 50);
      if (dict.contains(key)) continue;
      switch (shape_random() % 4) {
        case 0: {
          const DType dtype = dtypes[shape_random() % 4];
          const int rank = static_cast<int>(shape_random() % 3);
          Shape shape;
          for (int d = 0; d < rank; ++d) shape.push_back(pick(4));  // changes per dict
          dict.set(key, Tensor::empty(shape, dtype));
          break;
        }
        case 1: dict.set(key, pick(2) ? Value(std::int64_t{pick(1000)}) : Value(0.25 * pick(8))); break;
        case 2:
          dict.set(key, depth < 3 ? Value(self(schema * 7 + k + 1, depth + 1, self)) : Value(None{}));
          break;
        default: dict.set(key, TensorDict{}); break;
      }
    }
    return dict;
  };
  Pair pair;
  std::vector<bool> seen(12, false);
  for (int i = 0; i < 300; ++i) {
    const int schema = pick(12);
    TensorDict dict = make(schema, 0, make);
    for (const auto& [key, value] : dict)
      if (value.is<Tensor>()) std::memset(value.as<Tensor>().data(), i & 0x7f, value.as<Tensor>().nbytes());
    pair.round_trip(dict);
    seen[static_cast<std::size_t>(schema)] = true;
  }
  // 12 schemas through 8 slots: some evicted and defined again, none decoded wrongly.
  CHECK(pair.sender.definitions() >= 12);
  CHECK(pair.sender.definitions() == pair.receiver.definitions());
}
