#include "rank/peer_links.hpp"

namespace rankmesh {

void PeerLinks::connect(std::vector<std::shared_ptr<Channel>> outbound,
                        std::vector<std::shared_ptr<Channel>> inbound, PeerLocality locality) {
  std::lock_guard lock(failure_mutex_);
  outbound_ = std::move(outbound);
  inbound_ = std::move(inbound);
  locality_ = std::move(locality);
  if (failure_.empty()) return;
  for (auto& channel : outbound_)
    if (channel) channel->close(failure_);
  for (auto& channel : inbound_)
    if (channel) channel->close(failure_);
}

bool PeerLinks::try_send(int dst, Frame& frame, Deadline start_by, Deadline deadline,
                         const Describe& what, std::string& why) {
  try {
    outbound_[static_cast<std::size_t>(dst)]->send(frame, start_by, deadline);
    return true;
  } catch (const ChannelTimeout& timeout) {
    why = timeout.what();
    return false;
  } catch (const ChannelClosed& closed) {
    throw closed_error(what() + ": channel to rank " + std::to_string(dst), closed);
  }
}

Error PeerLinks::not_sent(int dst, const Describe& what, const std::string& why) const {
  return history_.reported(Error(Errc::timeout, what() + ": the message to rank " +
                                                    std::to_string(dst) +
                                                    " was not sent before the deadline: " + why));
}

bool PeerLinks::receive(int src, Frame& frame, Deadline deadline, const Describe& what,
                        const Landing* landing) {
  Channel& channel = *inbound_[static_cast<std::size_t>(src)];
  struct Landed {  // the landing holds for this receive only
    Channel* channel = nullptr;
    ~Landed() {
      if (channel != nullptr) channel->land(nullptr);
    }
  } landed;
  // Only channels that land payloads are told where (inproc does not: no call per frame).
  if (landing != nullptr && channel.traits().lands_payloads) {
    channel.land(landing);
    landed.channel = &channel;
  }
  // Only inproc channels fill them: a dict or loan left from an earlier frame must not pass for
  // this one's.
  frame.dict.reset();
  frame.loan.reset();
  try {
    return channel.recv(frame, deadline);
  } catch (const ChannelClosed& closed) {
    throw closed_error(what() + ": channel from rank " + std::to_string(src), closed);
  }
}

bool PeerLinks::released(int dst) noexcept {
  try {
    return outbound_[static_cast<std::size_t>(dst)]->wait_released(Clock::now());
  } catch (...) {
    return false;  // closed: nothing more is read from it, but neither is it released
  }
}

bool PeerLinks::wait_released(int dst, Deadline until, const Describe& what) {
  try {
    return outbound_[static_cast<std::size_t>(dst)]->wait_released(until);
  } catch (const ChannelClosed& closed) {
    throw closed_error(what() + ": channel to rank " + std::to_string(dst), closed);
  }
}

Error PeerLinks::not_released(int dst, const Describe& what) const {
  return history_.reported(Error(Errc::timeout, what() + ": rank " + std::to_string(dst) +
                                                    " did not take what was sent before the deadline"));
}

void PeerLinks::close_channel_to(int dst, const std::string& reason) {
  outbound_[static_cast<std::size_t>(dst)]->close(reason);
}

void PeerLinks::close_channel_from(int src, const std::string& reason) {
  inbound_[static_cast<std::size_t>(src)]->close(reason);
}

const Channel* PeerLinks::inbound(int src) const noexcept {
  const auto from = static_cast<std::size_t>(src);
  return from < inbound_.size() ? inbound_[from].get() : nullptr;
}

Error PeerLinks::closed_error(const std::string& channel, const ChannelClosed& closed) const {
  // This rank's own failure explains the closed channel better than how the channel learnt of it
  // (a tcp peer that failed with the same reason first shows here as a closed connection).
  const std::string failure = this->failure();
  return history_.reported(Error(Errc::peer_failed,
                                 channel + " is closed: " + (failure.empty() ? closed.what() : failure)));
}

void PeerLinks::record_failure(const std::string& reason) {
  std::lock_guard lock(failure_mutex_);
  if (failure_.empty()) failure_ = reason;
}

void PeerLinks::fail(const std::string& reason) {
  std::lock_guard lock(failure_mutex_);
  if (failure_.empty()) failure_ = reason;
  for (auto& channel : outbound_)
    if (channel) channel->close(reason);
  for (auto& channel : inbound_)
    if (channel) channel->close(reason);
}

std::string PeerLinks::failure() const {
  std::lock_guard lock(failure_mutex_);
  return failure_;
}

}  // namespace rankmesh
