// FrameStash: frames that arrived before their receive was issued — another group's, or the
// other class (point-to-point or collective) of the same group — kept per source until their
// own receive asks (RankContext::recv). Bounded, so that a peer whose operations run in another
// order cannot fill this rank's memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "frame.hpp"
#include "rank/group_ids.hpp"

namespace rankmesh {

class FrameStash {
public:
  static constexpr std::size_t kMaxFrames = 1024;
  static constexpr std::size_t kMaxBytes = std::size_t{1} << 30;  // payload bytes

  FrameStash(int world_size, const LayoutEpochs& epochs)
      : sources_(static_cast<std::size_t>(world_size)), epochs_(epochs) {}

  // Moves the oldest frame from global rank `src` for `group` and class into `out`; frames of
  // epochs that are over are dropped on the way. False when none is kept.
  bool take(int src, std::uint32_t group, bool collective, Frame& out);
  // Keeps a frame from `src`, behind the others or (a frame given back) in front of them.
  void keep(int src, Frame&& frame, bool front);
  // Whether a frame of `group` belongs to an epoch that is over (dropped, not kept).
  bool stale(std::uint32_t group) const noexcept { return epochs_.stale(group); }
  // Whether `src` has reached the bound; then the text says what it sent.
  bool full(int src) const noexcept;
  std::string describe_full(int src, int rank) const;

private:
  struct Kept {
    std::uint32_t group;
    bool collective;
    Frame frame;
    std::size_t bytes;  // payload bytes
  };
  struct Source {
    std::deque<Kept> frames;
    std::size_t bytes = 0;
  };
  std::vector<Source> sources_;  // by global rank; used by the thread running the operations
  const LayoutEpochs& epochs_;
};

}  // namespace rankmesh
