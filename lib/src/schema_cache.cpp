#include "schema_cache.hpp"

namespace rankmesh {
namespace {

using detail::Decoder;
using detail::Encoder;

constexpr std::uint8_t kCachedFrame = 0xc1;
constexpr std::uint8_t kDefinition = 'D';
constexpr std::uint8_t kUse = 'U';

void write_header(Encoder& encoder, std::uint8_t kind, std::size_t slot, std::uint64_t definition) {
  encoder.write_byte(kCachedFrame);
  encoder.write_byte(kind);
  encoder.write_uint(slot);
  encoder.write_uint(definition);
}

struct Header {
  bool defines = false;
  std::size_t slot = 0;
  std::uint64_t definition = 0;
};

Header read_header(Decoder& decoder) {
  decoder.read_byte();  // kCachedFrame, checked by the caller
  const std::size_t kind_at = decoder.offset();
  const std::uint8_t kind = decoder.read_byte();
  if (kind != kDefinition && kind != kUse)
    decoder.fail(Errc::malformed, kind_at,
                 "cached frame kind " + std::to_string(kind) + " is unknown");
  Header header;
  header.defines = kind == kDefinition;
  const std::size_t slot_at = decoder.offset();
  const std::uint64_t slot = decoder.read_uint("the schema slot");
  if (slot >= kCachedSchemas)
    decoder.fail(Errc::malformed, slot_at,
                 "schema slot " + std::to_string(slot) + " is out of range (0.." +
                     std::to_string(kCachedSchemas - 1) + ")");
  header.slot = static_cast<std::size_t>(slot);
  const std::size_t definition_at = decoder.offset();
  header.definition = decoder.read_uint("the schema definition");
  if (header.definition == 0)
    decoder.fail(Errc::malformed, definition_at, "schema definition 0 does not exist");
  return header;
}

}  // namespace

void SchemaSender::encode(const TensorDict& dict, std::vector<std::uint8_t>& out,
                          std::vector<const Tensor*>& tensors) {
  const std::size_t first_tensor = tensors.size();
  // The schema used last is tried first: a stream repeats one schema or alternates a few.
  auto try_slot = [&](std::size_t index) {
    Slot& slot = slots_[index];
    if (!slot.schema) return false;
    Encoder encoder(out);
    write_header(encoder, kUse, index, slot.definition);
    if (!slot.schema->write_instance(dict, encoder, tensors, slot.matched)) {
      tensors.resize(first_tensor);
      return false;
    }
    encoder.finish();
    slot.last_used = ++clock_;
    last_used_ = index;
    return true;
  };
  if (try_slot(last_used_)) return;
  for (std::size_t i = 0; i < kCachedSchemas; ++i)
    if (i != last_used_ && try_slot(i)) return;
  if (detail::count_entries(dict) > kMaxCachedLeaves) {
    Encoder(out).write_dict(dict, tensors);
    return;
  }
  // A new schema: it takes an empty slot or the least recently used one.
  std::size_t victim = 0;
  for (std::size_t i = 1; i < kCachedSchemas; ++i)
    if (slots_[i].last_used < slots_[victim].last_used) victim = i;
  Encoder encoder(out);
  write_header(encoder, kDefinition, victim, definitions_ + 1);
  encoder.write_dict(dict, tensors);  // throws for a dict the codec cannot carry: nothing changed
  slots_[victim] = Slot{DictSchema::of(dict), ++definitions_, ++clock_, {}};
  last_used_ = victim;
}

void SchemaSender::forget() noexcept {
  for (Slot& slot : slots_) slot = Slot{};
}

void SchemaReceiver::take_in(std::span<const std::uint8_t> metadata, const FrameLimits& limits) {
  if (!is_cached_frame(metadata) || metadata.size() < 2 || metadata[1] != kDefinition) return;
  Slot* slot = nullptr;
  try {
    Decoder decoder(metadata, limits, "metadata");
    const Header header = read_header(decoder);
    slot = &slots_[header.slot];
    if (slot->definition == header.definition) return;  // a frame put back, fetched again
    *slot = Slot{std::nullopt, header.definition, {}};
    ++definitions_;
    std::optional<DictSchema> schema = DictSchema::of(decoder.read_metadata());
    if (!schema) {
      slot->refused = "its entries are not those of a dict (sliced, repeated or out of order)";
    } else if (schema->leaves() > kMaxCachedLeaves) {
      slot->refused = "it has more than " + std::to_string(kMaxCachedLeaves) + " keys";
    } else {
      slot->schema = std::move(schema);
    }
  } catch (const Error& error) {
    if (slot != nullptr) slot->refused = error.what();
  }
}

const DictSchema& SchemaReceiver::held(std::size_t slot, std::uint64_t definition,
                                       const Decoder& decoder) const {
  const Slot& held = slots_[slot];
  if (held.definition != definition)
    decoder.fail(Errc::mismatch, 0,
                 "the frame uses schema definition #" + std::to_string(definition) + " in slot " +
                     std::to_string(slot) + ", but this receiver holds " +
                     (held.definition == 0 ? std::string("none")
                                           : "definition #" + std::to_string(held.definition)) +
                     " there (a definition was lost)");
  if (!held.schema)
    decoder.fail(Errc::malformed, 0,
                 "the frame uses schema definition #" + std::to_string(definition) +
                     ", which this receiver refused: " + held.refused);
  return *held.schema;
}

std::optional<TensorDict> SchemaReceiver::read_dict(std::span<const std::uint8_t> metadata,
                                                    std::span<const Tensor> payloads,
                                                    const Allocator& empty,
                                                    const FrameLimits& limits) const {
  try {
    Decoder decoder(metadata, limits, "metadata");
    const Header header = read_header(decoder);
    if (header.defines) {
      TensorDict dict;
      if (decoder.read_dict(dict, payloads, empty)) return dict;
      return std::nullopt;
    }
    return held(header.slot, header.definition, decoder).read_instance(decoder, payloads, empty);
  } catch (const Error&) {
    return std::nullopt;  // metadata() names it
  }
}

Result<Metadata> SchemaReceiver::metadata(std::span<const std::uint8_t> metadata,
                                          const FrameLimits& limits) const {
  try {
    Decoder decoder(metadata, limits, "metadata");
    const Header header = read_header(decoder);
    if (header.defines) return decoder.read_metadata();
    return held(header.slot, header.definition, decoder).read_metadata(decoder);
  } catch (const Error& error) {
    return error;
  }
}

SchemaSender& SchemaCaches::make_to(int peer) {
  return *(to_[static_cast<std::size_t>(peer)] = std::make_unique<SchemaSender>());
}

SchemaReceiver& SchemaCaches::make_from(int peer) {
  return *(from_[static_cast<std::size_t>(peer)] = std::make_unique<SchemaReceiver>());
}

}  // namespace rankmesh
