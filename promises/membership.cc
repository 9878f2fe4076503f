#include "promises/membership.h"

namespace vow::promises {

Membership::Membership(AgentKey self, std::unique_ptr<FailureDetector> detector)
    : self_(self), detector_(std::move(detector)) {}

Membership::Peer* Membership::peer(const AgentKey& key, std::int64_t now_ms) {
  if (key == self_) return nullptr;
  auto [it, inserted] = peers_.try_emplace(key);
  if (inserted) detector_->learned(key, now_ms);
  return &it->second;
}

const Membership::Peer* Membership::find(const AgentKey& key) const {
  auto it = peers_.find(key);
  return it == peers_.end() ? nullptr : &it->second;
}

void Membership::heard(const AgentKey& from, std::int64_t now_ms) {
  if (from == self_) return;
  Peer* p = peer(from, now_ms);
  if (!p->heard) first_heard_.push_back(from);
  p->heard = true;
  detector_->heard_from(from, now_ms);
}

Liveness Membership::liveness(const AgentKey& peer, std::int64_t now_ms) const {
  return detector_->liveness(peer, now_ms);
}

bool Membership::is_live(const AgentKey& agent, std::int64_t now_ms) const {
  if (agent == self_) return true;
  return detector_->liveness(agent, now_ms) != Liveness::kDead;
}

std::optional<std::int64_t> Membership::last_heard_ms(const AgentKey& peer) const {
  return detector_->last_heard_ms(peer);
}

std::optional<std::int64_t> Membership::deadline(const AgentKey& peer, std::int64_t now_ms) const {
  auto t = detector_->last_heard_ms(peer);
  if (!t || !is_live(peer, now_ms)) return std::nullopt;
  return *t + detector_->window_ms();
}

std::optional<std::int64_t> Membership::next_deadline(std::int64_t now_ms) const {
  std::optional<std::int64_t> next;
  std::int64_t expiry = detector_->next_expiry_ms();
  if (expiry != INT64_MIN) {
    // The detector knows (SWIM: a suspicion's end); no pass over every peer.
    if (expiry != INT64_MAX && expiry > now_ms) next = expiry;
    return next;
  }
  for (const auto& [key, p] : peers_) {
    auto t = deadline(key, now_ms);
    if (t && *t > now_ms && (!next || *t < *next)) next = t;
  }
  return next;
}

bool Membership::full(const AgentKey& agent) const {
  const Peer* p = agent == self_ ? nullptr : find(agent);
  return p != nullptr && p->capacity > 0 && p->running >= p->capacity;
}

std::vector<Membership::Transition> Membership::transitions(std::int64_t now_ms) {
  std::vector<Transition> out;
  // Nothing moved since the last scan (no state change, no expiry due, no new peer):
  // every answer is the one reported. Per tick this costs O(1), not O(peers).
  std::uint64_t generation = detector_->generation();
  if (generation != 0 && generation == scanned_generation_ && peers_.size() == scanned_peers_ &&
      now_ms < scanned_until_ms_) {
    return out;
  }
  scanned_generation_ = generation;
  scanned_peers_ = peers_.size();
  scanned_until_ms_ = detector_->next_expiry_ms();
  auto look = [&](const AgentKey& key, Peer& p) {
    Liveness l = detector_->liveness(key, now_ms);
    if (l == p.reported) return;
    p.reported = l;
    out.push_back(Transition{key, l});
  };
  // The peers whose answer may have changed, when the detector tells them (SWIM): a
  // change of one member costs O(1), not O(peers).
  if (auto changed = detector_->take_changed()) {
    for (const AgentKey& key : *changed) {
      auto it = peers_.find(key);
      if (it != peers_.end()) look(key, it->second);
    }
    return out;
  }
  for (auto& [key, p] : peers_) look(key, p);
  return out;
}

std::vector<AgentKey> Membership::heartbeat_targets(std::int64_t now_ms) {
  return detector_->heartbeat_targets(now_ms);
}

std::vector<FailureDetector::Send> Membership::probes(std::int64_t now_ms) {
  return detector_->probes(now_ms);
}

std::vector<FailureDetector::Send> Membership::on_probe(const AgentKey& from, const Probe& probe,
                                                        std::int64_t now_ms) {
  if (from == self_) return {};
  peer(from, now_ms);
  return detector_->on_probe(from, probe, now_ms);
}

std::vector<AgentKey> Membership::live_peers(std::int64_t now_ms) const {
  std::vector<AgentKey> out;
  for (const auto& [key, p] : peers_) {
    if (is_live(key, now_ms)) out.push_back(key);
  }
  return out;
}

}  // namespace vow::promises
