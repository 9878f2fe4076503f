#include "promises/liveness.h"

namespace vow::promises {

const char* liveness_name(Liveness liveness) {
  switch (liveness) {
    case Liveness::kAlive:
      return "alive";
    case Liveness::kSuspect:
      return "suspect";
    case Liveness::kDead:
      return "dead";
  }
  return "unknown";
}

void HeartbeatDetector::learned(const AgentKey& peer, std::int64_t now_ms) {
  last_heard_ms_.emplace(peer, now_ms);
}

void HeartbeatDetector::heard_from(const AgentKey& peer, std::int64_t now_ms) {
  auto& t = last_heard_ms_[peer];
  if (now_ms > t) t = now_ms;
}

Liveness HeartbeatDetector::liveness(const AgentKey& peer, std::int64_t now_ms) const {
  auto it = last_heard_ms_.find(peer);
  if (it == last_heard_ms_.end()) return Liveness::kDead;
  std::int64_t silent_ms = now_ms - it->second;
  if (silent_ms >= timing_.dead_after_ms) return Liveness::kDead;
  if (silent_ms >= timing_.suspect_after_ms) return Liveness::kSuspect;
  return Liveness::kAlive;
}

std::optional<std::int64_t> HeartbeatDetector::last_heard_ms(const AgentKey& peer) const {
  auto it = last_heard_ms_.find(peer);
  if (it == last_heard_ms_.end()) return std::nullopt;
  return it->second;
}

std::vector<AgentKey> HeartbeatDetector::heartbeat_targets(std::int64_t now_ms) {
  if (now_ms < next_heartbeat_ms_) return {};
  next_heartbeat_ms_ = now_ms + timing_.heartbeat_ms;
  return peers();
}

std::vector<AgentKey> HeartbeatDetector::peers() const {
  std::vector<AgentKey> out;
  out.reserve(last_heard_ms_.size());
  for (const auto& [k, t] : last_heard_ms_) out.push_back(k);
  return out;
}

}  // namespace vow::promises
