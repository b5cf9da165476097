#include "rank/frame_stash.hpp"

#include "op_code.hpp"

namespace rankmesh {

bool FrameStash::take(int src, std::uint32_t group, bool collective, Frame& out) {
  Source& source = sources_[static_cast<std::size_t>(src)];
  for (auto it = source.frames.begin(); it != source.frames.end();) {
    if (it->group == group && it->collective == collective) {
      out = std::move(it->frame);
      source.bytes -= it->bytes;
      source.frames.erase(it);
      return true;
    }
    if (epochs_.stale(it->group)) {  // its group was rebuilt since: nobody will ask for it
      source.bytes -= it->bytes;
      it = source.frames.erase(it);
    } else {
      ++it;
    }
  }
  return false;
}

void FrameStash::keep(int src, Frame&& frame, bool front) {
  Source& source = sources_[static_cast<std::size_t>(src)];
  std::size_t bytes = 0;
  for (const Tensor& t : frame.tensors) bytes += t.nbytes();
  Kept entry{frame.header.group, is_collective_op(frame.header.op), std::move(frame), bytes};
  if (front) {
    source.frames.push_front(std::move(entry));
  } else {
    source.frames.push_back(std::move(entry));
  }
  source.bytes += bytes;
}

bool FrameStash::full(int src) const noexcept {
  const Source& source = sources_[static_cast<std::size_t>(src)];
  return source.frames.size() >= kMaxFrames || source.bytes >= kMaxBytes;
}

std::string FrameStash::describe_full(int src, int rank) const {
  const Source& source = sources_[static_cast<std::size_t>(src)];
  return "rank " + std::to_string(src) + " sent more than " + std::to_string(source.frames.size()) +
         " frames (" + std::to_string(source.bytes) + " payload bytes) that no operation of rank " +
         std::to_string(rank) +
         " has asked for yet; the groups' operations are issued in a different order on each side";
}

}  // namespace rankmesh
