#include "trace_ring.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace rankmesh {
namespace {

void copy_truncated(char* out, std::size_t size, const std::string& text) noexcept {
  const std::size_t n = std::min(size - 1, text.size());
  std::memcpy(out, text.data(), n);
  out[n] = '\0';
}

// A JSON string literal of `text` (control characters and quotes escaped).
void write_string(std::ostream& out, const char* text) {
  out << '"';
  for (const char* c = text; *c != '\0'; ++c) {
    const auto byte = static_cast<unsigned char>(*c);
    if (byte == '"' || byte == '\\') {
      out << '\\' << *c;
    } else if (byte < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", byte);
      out << escaped;
    } else {
      out << *c;
    }
  }
  out << '"';
}
void write_string(std::ostream& out, const std::string& text) { write_string(out, text.c_str()); }

// Microseconds with nanosecond digits, as trace-event files count time.
void write_us(std::ostream& out, std::int64_t ns) {
  char text[32];
  std::snprintf(text, sizeof text, "%lld.%03lld", static_cast<long long>(ns / 1000),
                static_cast<long long>(std::abs(ns % 1000)));
  out << text;
}

void write_event(std::ostream& out, const TraceEvent& e, int pid) {
  if (e.kind == TraceEvent::Kind::instant) {
    out << "{\"ph\":\"i\",\"s\":\"t\",\"cat\":\"failure\",\"name\":";
    write_string(out, e.name);
    out << ",\"pid\":" << pid << ",\"tid\":" << int{e.lane} << ",\"ts\":";
    write_us(out, e.start_ns);
    out << ",\"args\":{\"message\":";
    write_string(out, e.message);
    if (e.group[0] != '\0') {
      out << ",\"group\":";
      write_string(out, e.group);
    }
    out << "}}";
    return;
  }
  out << "{\"ph\":\"X\",\"name\":";
  write_string(out, e.name);
  out << ",\"cat\":\"" << (e.collective ? "collective" : "p2p") << "\",\"pid\":" << pid
      << ",\"tid\":" << int{e.lane} << ",\"ts\":";
  write_us(out, e.start_ns);
  out << ",\"dur\":";
  write_us(out, std::max<std::int64_t>(0, e.end_ns - e.start_ns));
  out << ",\"args\":{\"group\":";
  write_string(out, e.group);
  out << ",\"group_id\":" << e.group_id;
  if (e.seq >= 0) out << ",\"seq\":" << e.seq;
  out << ",\"bytes\":" << e.bytes << ",\"peers\":[";
  const std::size_t listed = std::min<std::size_t>(e.peer_count, TraceEvent::kMaxPeers);
  for (std::size_t i = 0; i < listed; ++i) out << (i ? "," : "") << e.peers[i];
  out << "]";
  if (e.peer_count > TraceEvent::kMaxPeers) out << ",\"peer_count\":" << e.peer_count;
  out << ",\"transport\":";
  write_string(out, e.transport);
  if (e.failed) {
    out << ",\"error\":";
    write_string(out, e.message[0] != '\0' ? e.message : "the operation threw (its error was not reported)");
  }
  out << "}}";
  if (e.flow != TraceEvent::Flow::none) {
    const bool sent = e.flow == TraceEvent::Flow::sent;
    out << ",\n{\"ph\":\"" << (sent ? "s" : "f") << "\"" << (sent ? "" : ",\"bp\":\"e\"")
        << ",\"cat\":\"flow\",\"name\":\"message\",\"id\":";
    write_string(out, flow_id(e.group_id, e.flow_src, e.flow_dst, e.seq));
    out << ",\"pid\":" << pid << ",\"tid\":" << int{e.lane} << ",\"ts\":";
    write_us(out, sent ? e.start_ns : e.end_ns);
    out << "}";
  }
}

}  // namespace

void TraceEvent::set_group(const std::string& name) noexcept { copy_truncated(group, sizeof group, name); }
void TraceEvent::set_message(const std::string& text) noexcept {
  copy_truncated(message, sizeof message, text);
}
void TraceEvent::add_peer(int peer) noexcept {
  for (std::size_t i = 0; i < std::min<std::size_t>(peer_count, kMaxPeers); ++i)
    if (peers[i] == peer) return;
  if (peer_count < kMaxPeers) peers[peer_count] = peer;
  ++peer_count;
}

TraceRing::TraceRing(std::size_t capacity) : events_(std::max<std::size_t>(1, capacity)) {}

void TraceRing::push(const TraceEvent& event) noexcept {
  std::lock_guard lock(mutex_);
  events_[recorded_ % events_.size()] = event;
  ++recorded_;
}

TraceRing::Snapshot TraceRing::snapshot() const {
  std::lock_guard lock(mutex_);
  Snapshot snapshot;
  snapshot.recorded = recorded_;
  const std::size_t held = static_cast<std::size_t>(std::min<std::uint64_t>(recorded_, events_.size()));
  snapshot.dropped = recorded_ - held;
  snapshot.events.reserve(held);
  for (std::uint64_t i = recorded_ - held; i < recorded_; ++i)
    snapshot.events.push_back(events_[i % events_.size()]);
  return snapshot;
}

std::string flow_id(std::uint32_t group_id, int src, int dst, std::int64_t seq) {
  return std::to_string(group_id) + ":" + std::to_string(src) + ">" + std::to_string(dst) + "#" +
         std::to_string(seq);
}

void write_chrome_trace(std::ostream& out, const TraceFileInfo& info,
                        const TraceRing::Snapshot& snapshot) {
  const int pid = info.rank;
  out << "{\"displayTimeUnit\":\"ns\",\n\"otherData\":{\"rankmesh_trace\":1,\"rank\":" << info.rank
      << ",\"world_size\":" << info.world_size << ",\"host\":";
  write_string(out, info.host);
  out << ",\"clock\":\"CLOCK_MONOTONIC\",\"clock_offset_us\":" << info.clock_offset_us
      << ",\"clock_error_us\":" << info.clock_error_us << ",\"clock_method\":";
  write_string(out, info.clock_method);
  out << ",\"recorded\":" << snapshot.recorded << ",\"dropped\":" << snapshot.dropped
      << ",\"reason\":";
  write_string(out, info.reason);
  out << "},\n\"traceEvents\":[\n";
  out << "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":" << pid
      << ",\"args\":{\"name\":\"rank " << info.rank << "\"}},\n";
  out << "{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":" << pid
      << ",\"args\":{\"sort_index\":" << info.rank << "}},\n";
  out << "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":" << pid
      << ",\"tid\":0,\"args\":{\"name\":\"engine\"}},\n";
  out << "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":" << pid
      << ",\"tid\":1,\"args\":{\"name\":\"stream\"}}";
  for (const TraceEvent& event : snapshot.events) {
    out << ",\n";
    write_event(out, event, pid);
  }
  out << "\n]}\n";
}

}  // namespace rankmesh
