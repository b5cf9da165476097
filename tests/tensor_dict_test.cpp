#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "rankmesh/error.hpp"
#include "rankmesh/tensor_dict.hpp"
#include "dict_metadata.hpp"

using namespace rankmesh;

namespace {

// The Error that `action` throws; nothing when it throws none.
std::optional<Error> error_of(auto&& action) {
  try {
    action();
  } catch (const Error& error) {
    return error;
  }
  return std::nullopt;
}

bool mentions(const std::optional<Error>& error, const std::string& fragment) {
  return error && std::string(error->what()).find(fragment) != std::string::npos;
}

Tensor iota(Shape shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* bytes = t.data_as<std::uint8_t>();
  std::iota(bytes, bytes + t.nbytes(), std::uint8_t{1});
  return t;
}

std::vector<std::string> keys_of(const TensorDict& dict) {
  std::vector<std::string> keys;
  for (const auto& entry : dict) keys.push_back(entry.key);
  return keys;
}

// Every value kind, a nested dict with tensors, an empty nested dict, an empty tensor.
TensorDict sample() {
  return TensorDict{
      {"hidden_states", iota({2, 3}, DType::bf16)},
      {"step", 7},
      {"scale", 0.5},
      {"is_prefill", true},
      {"name", "decode"},
      {"blob", Bytes{0, 1, 255}},
      {"nothing", None{}},
      {"positions", List{1, 2, List{"nested", 3.0}}},
      {"cache", TensorDict{{"k", iota({4}, DType::f16)},
                           {"empty", TensorDict{}},
                           {"deeper", TensorDict{{"v", iota({0, 8}, DType::i64)}, {"n", 2}}}}},
      {"residual", iota({2, 3}, DType::f32)},
  };
}

}  // namespace

TEST_CASE("a tensor dict keeps keys in insertion order, setting a key replaces it in place") {
  TensorDict dict{{"b", 1}, {"a", 2}};
  dict.set("c", 3);
  dict.set("b", "replaced");
  CHECK(keys_of(dict) == std::vector<std::string>{"b", "a", "c"});
  CHECK(dict.at("b") == Value("replaced"));
  CHECK(dict.size() == 3);
  CHECK(dict.contains("a"));
  CHECK(dict.find("z") == nullptr);
  CHECK(dict.erase("a"));
  CHECK_FALSE(dict.erase("a"));
  CHECK(keys_of(dict) == std::vector<std::string>{"b", "c"});
  CHECK(TensorDict{}.empty());
}

TEST_CASE("try_emplace adds a new key at the end and leaves an existing one alone") {
  for (int size : {2, 40}) {  // small dicts are searched in place, large ones through an index
    TensorDict dict;
    for (int i = 0; i < size; ++i) dict.set("k" + std::to_string(i), i);
    std::string key = "k1";
    Value value("other");
    CHECK_FALSE(dict.try_emplace(std::move(key), std::move(value)));
    CHECK(key == "k1");  // not moved from
    CHECK(value == Value("other"));
    CHECK(dict.at("k1") == Value(1));
    CHECK(dict.try_emplace("new", Value(-1)));
    CHECK(dict.size() == static_cast<std::size_t>(size) + 1);
    CHECK(keys_of(dict).back() == "new");
    CHECK(dict.at("new") == Value(-1));
    CHECK_FALSE(dict.try_emplace("new", Value(0)));
  }
}

TEST_CASE("at names the missing key") {
  const TensorDict dict{{"a", 1}};
  const auto error = error_of([&] { dict.at("missing"); });
  CHECK(error->code() == Errc::invalid_argument);
  CHECK(mentions(error, "'missing'"));
}

TEST_CASE("a large dict finds, replaces and erases keys like a small one") {
  TensorDict dict;
  for (int i = 0; i < 1000; ++i) dict.set("k" + std::to_string(i), i);
  dict.set("k500", -1);
  CHECK(dict.size() == 1000);
  CHECK(dict.at("k500") == Value(-1));
  CHECK(dict.erase("k10"));
  CHECK_FALSE(dict.contains("k10"));
  CHECK(dict.at("k999") == Value(999));
  CHECK(dict.at("k11") == Value(11));
  const auto keys = keys_of(dict);
  CHECK(keys[10] == "k11");
  int erased = 0;
  for (int i = 0; i < 990; ++i) erased += dict.erase("k" + std::to_string(i));
  CHECK(erased == 989);
  CHECK(keys_of(dict).front() == "k990");
  CHECK(dict.at("k995") == Value(995));
}

TEST_CASE("values are equal when kind and content are equal") {
  CHECK(Value(1) == Value(std::int64_t{1}));
  CHECK(Value(1) != Value(1.0));
  CHECK(Value(true) != Value(1));
  CHECK(Value("a") != Value(Bytes{'a'}));
  CHECK(Value(None{}) == Value());
  CHECK(Value(List{1, List{"x"}}) == Value(List{1, List{"x"}}));
  CHECK(Value(List{1, List{"x"}}) != Value(List{1, List{"y"}}));
  CHECK(Value(iota({3}, DType::f32)) == Value(iota({3}, DType::f32)));
  CHECK(Value(iota({3}, DType::f32)) != Value(Tensor::empty({3}, DType::f32)));
  CHECK(Value(TensorDict{{"a", 1}, {"b", 2}}) != Value(TensorDict{{"b", 2}, {"a", 1}}));
}

TEST_CASE("a copied value of every kind equals its original and does not change with it") {
  const Tensor tensor = iota({3}, DType::f32);
  std::vector<Value> originals = {Value(),        Value(true),           Value(-7),
                                  Value(0.25),    Value("text"),         Value(Bytes{1, 2}),
                                  Value(List{1}), Value(TensorDict{{"a", 1}}), Value(tensor)};
  REQUIRE(originals.size() == std::variant_size_v<Value::Variant>);
  for (std::size_t kind = 0; kind < originals.size(); ++kind) {
    CAPTURE(kind);
    const Value& original = originals[kind];
    CHECK(original.v.index() == kind);
    Value copy = original;
    CHECK(copy == original);
    Value assigned;
    assigned = original;
    CHECK(assigned == original);
    copy = Value(99);  // the copy is its own: the original keeps its value
    CHECK(original.v.index() == kind);
  }
  // A copied tensor shares the memory, as a copied Tensor does.
  CHECK(Value(originals[8]).as<Tensor>().shares_storage_with(tensor));
}

TEST_CASE("a copy of a large dict has its own index") {
  TensorDict dict;
  for (int i = 0; i < 100; ++i) dict.set("k" + std::to_string(i), i);
  TensorDict copy = dict;
  copy.set("k50", -1);
  copy.set("new", 1);
  CHECK(copy.erase("k3"));
  CHECK(dict.at("k50") == Value(50));
  CHECK_FALSE(dict.contains("new"));
  CHECK(dict.contains("k3"));
  CHECK(copy.at("k50") == Value(-1));
  CHECK(copy.at("k99") == Value(99));
  CHECK(copy.size() == 100);
  dict = copy;
  CHECK(dict.at("new") == Value(1));
  CHECK(dict == copy);
}

TEST_CASE("copies share their keys until one of them adds or erases a key; then only it changes") {
  TensorDict dict{{"a", 1}, {"b", iota({2}, DType::f32)}, {"c", TensorDict{{"d", 2}}}};
  // Iterators: an entry's key and value through * and ->, random access, in insertion order.
  CHECK(dict.begin()->key == "a");
  CHECK((*dict.begin()).value == Value(1));
  CHECK((dict.begin() + 2)->key == "c");
  CHECK(dict.begin()[1].key == "b");
  CHECK(dict.end() - dict.begin() == 3);
  CHECK(std::next(dict.begin(), 3) == dict.end());
  static_assert(std::random_access_iterator<TensorDict::const_iterator>);
  TensorDict copy = dict;
  copy.set("a", 10);  // a value only: both still have the same keys
  CHECK(dict.at("a") == Value(1));
  CHECK(keys_of(copy) == keys_of(dict));
  copy.set("e", 5);
  CHECK(keys_of(dict) == std::vector<std::string>{"a", "b", "c"});
  CHECK(keys_of(copy) == std::vector<std::string>{"a", "b", "c", "e"});
  CHECK_FALSE(dict.contains("e"));
  CHECK(copy.at("e") == Value(5));
  TensorDict second = dict;
  CHECK(dict.erase("b"));  // the original changes, its copy keeps the key
  CHECK(keys_of(dict) == std::vector<std::string>{"a", "c"});
  CHECK(keys_of(second) == std::vector<std::string>{"a", "b", "c"});
  CHECK(second.at("b") == Value(iota({2}, DType::f32)));
  CHECK_FALSE(dict.contains("b"));
  CHECK(dict.try_emplace("b", Value(3)));
  CHECK(keys_of(dict) == std::vector<std::string>{"a", "c", "b"});
  CHECK(keys_of(second) == std::vector<std::string>{"a", "b", "c"});
  // A nested dict copied along shares its keys too, and changes alone.
  second.find("c")->as<TensorDict>().set("f", 6);
  CHECK(keys_of(dict.at("c").as<TensorDict>()) == std::vector<std::string>{"d"});
  CHECK(keys_of(second.at("c").as<TensorDict>()) == std::vector<std::string>{"d", "f"});
  // Equality: the same keys compare equal whether shared or not.
  TensorDict rebuilt{{"a", 1}, {"b", iota({2}, DType::f32)}, {"c", TensorDict{{"d", 2}, {"f", 6}}}};
  CHECK(rebuilt == second);
  CHECK(TensorDict(second) == second);
  TensorDict other_keys{{"a", 1}, {"x", iota({2}, DType::f32)}, {"c", TensorDict{{"d", 2}, {"f", 6}}}};
  CHECK_FALSE(other_keys == second);
  // A moved-from dict is empty and takes keys of its own again.
  TensorDict moved = std::move(second);
  CHECK(moved.size() == 3);
  second.set("z", 1);
  CHECK(keys_of(second) == std::vector<std::string>{"z"});
  CHECK(keys_of(moved) == std::vector<std::string>{"a", "b", "c"});
}

TEST_CASE("floats compare by bit pattern, so NaN equals itself and -0 differs from 0") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(Value(nan) == Value(nan));
  CHECK(Value(-0.0) != Value(0.0));
  CHECK(Value(0.1) == Value(0.1));
}

TEST_CASE("split lists keys in order, nested dicts depth first by path, tensors described") {
  const TensorDict dict = sample();
  const SplitDict parts = split(dict);
  using Path = std::vector<std::string>;
  std::vector<Path> paths;
  for (const MetaEntry& entry : parts.metadata.entries) paths.push_back(entry.path);
  CHECK(paths == std::vector<Path>{{"hidden_states"},
                                   {"step"},
                                   {"scale"},
                                   {"is_prefill"},
                                   {"name"},
                                   {"blob"},
                                   {"nothing"},
                                   {"positions"},
                                   {"cache", "k"},
                                   {"cache", "empty"},
                                   {"cache", "deeper", "v"},
                                   {"cache", "deeper", "n"},
                                   {"residual"}});

  const auto& entries = parts.metadata.entries;
  CHECK(entries[0].kind == MetaEntry::Kind::tensor);
  CHECK(entries[0].tensor == TensorMeta{DeviceType::cpu, DType::bf16, Shape{2, 3}, false});
  CHECK(entries[1].kind == MetaEntry::Kind::value);
  CHECK(entries[1].value == Value(7));
  CHECK(entries[7].value == Value(List{1, 2, List{"nested", 3.0}}));
  CHECK(entries[9].kind == MetaEntry::Kind::empty_dict);
  CHECK(entries[10].tensor.shape == Shape{0, 8});

  CHECK(parts.metadata.tensor_count() == 4);
  REQUIRE(parts.tensors.size() == 4);
  CHECK(parts.tensors[0].shares_storage_with(dict.at("hidden_states").as<Tensor>()));
  CHECK(parts.tensors[3].shares_storage_with(dict.at("residual").as<Tensor>()));
}

TEST_CASE("split records the device type of each tensor") {
  float x = 0;
  const TensorDict dict{
      {"t", Tensor::wrap(&x, {1}, DType::f32, Device{DeviceType::npu, 2}, nullptr)}};
  CHECK(split(dict).metadata.entries[0].tensor.device_type == DeviceType::npu);
}

TEST_CASE("join puts split dicts back together, equal, sharing the tensors") {
  const TensorDict dict = sample();
  SplitDict parts = split(dict);
  const TensorDict joined = join(parts.metadata, parts.tensors);
  CHECK(joined == dict);
  CHECK(joined.at("residual").as<Tensor>().shares_storage_with(dict.at("residual").as<Tensor>()));
  CHECK(join(Metadata{}, {}) == TensorDict{});
}

TEST_CASE("split refuses what the codec cannot carry, naming the key path") {
  const TensorDict undefined{{"outer", TensorDict{{"inner", Tensor()}}}};
  auto error = error_of([&] { split(undefined); });
  CHECK(error->code() == Errc::invalid_argument);
  CHECK(mentions(error, "'outer.inner'"));

  const TensorDict tensor_in_list{{"xs", List{1, Tensor::empty({1}, DType::f32)}}};
  error = error_of([&] { split(tensor_in_list); });
  CHECK(error->code() == Errc::invalid_argument);
  CHECK(mentions(error, "'xs'"));

  const TensorDict dict_in_list{{"xs", List{List{TensorDict{}}}}};
  CHECK(mentions(error_of([&] { split(dict_in_list); }), "'xs'"));
}

TEST_CASE("join checks the tensors against the metadata") {
  const TensorDict dict{{"a", TensorDict{{"x", iota({2, 2}, DType::f32)}}}, {"y", 1}};
  const SplitDict parts = split(dict);

  auto error = error_of([&] { join(parts.metadata, {}); });
  CHECK(error->code() == Errc::invalid_argument);
  CHECK(mentions(error, "describes 1 tensors but 0 were given"));

  error = error_of([&] { join(parts.metadata, {Tensor::empty({4}, DType::f32)}); });
  CHECK(error->code() == Errc::invalid_argument);
  CHECK(mentions(error, "'a.x' is [4] float32 but the metadata says [2, 2] float32"));

  error = error_of([&] { join(parts.metadata, {Tensor::empty({2, 2}, DType::f16)}); });
  CHECK(mentions(error, "'a.x' is [2, 2] float16"));

  CHECK(mentions(error_of([&] { join(parts.metadata, {Tensor()}); }), "'a.x' is undefined"));
}

TEST_CASE("join refuses inconsistent metadata, naming the key path") {
  auto value_at = [](std::vector<std::string> path) {
    MetaEntry entry;
    entry.path = std::move(path);
    entry.value = Value(1);
    return entry;
  };
  auto empty_dict_at = [](std::vector<std::string> path) {
    MetaEntry entry;
    entry.path = std::move(path);
    entry.kind = MetaEntry::Kind::empty_dict;
    return entry;
  };

  auto error = error_of([&] { join(Metadata{{value_at({"a", "b"}), value_at({"a", "b"})}}, {}); });
  CHECK(error->code() == Errc::invalid_argument);
  CHECK(mentions(error, "duplicate key 'a.b'"));

  CHECK(mentions(error_of([&] {
                   join(Metadata{{empty_dict_at({"a"}), empty_dict_at({"a"})}}, {});
                 }),
                 "duplicate key 'a'"));
  CHECK(mentions(error_of([&] {
                   join(Metadata{{value_at({"a", "b"}), value_at({"a"})}}, {});
                 }),
                 "duplicate key 'a'"));

  error = error_of([&] { join(Metadata{{value_at({"a"}), value_at({"a", "b", "c"})}}, {}); });
  CHECK(error->code() == Errc::invalid_argument);
  CHECK(mentions(error, "'a.b.c' goes through 'a', which is not a dict"));

  CHECK(mentions(error_of([&] { join(Metadata{{value_at({})}}, {}); }), "empty key path"));

  MetaEntry tensor_as_value = value_at({"t"});
  tensor_as_value.value = Value(Tensor::empty({1}, DType::f32));
  CHECK(mentions(error_of([&] { join(Metadata{{tensor_as_value}}, {}); }), "'t'"));
}

TEST_CASE("join builds a dict of many keys in linear time") {
  Metadata metadata;
  for (int i = 0; i < 100000; ++i) {
    MetaEntry& entry = metadata.entries.emplace_back();
    entry.path = {"outer", std::to_string(i)};
    entry.value = Value(i);
  }
  const TensorDict joined = join(metadata, {});
  const auto& outer = joined.at("outer").as<TensorDict>();
  CHECK(outer.size() == 100000);
  CHECK(outer.at("99999") == Value(99999));
}
