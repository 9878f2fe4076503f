#include "promises/swim.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace vow::promises {

const char* membership_profile_name(MembershipProfile profile) {
  switch (profile) {
    case MembershipProfile::kLan:
      return "lan";
    case MembershipProfile::kWan:
      return "wan";
    case MembershipProfile::kAllToAll:
      return "all-to-all";
  }
  return "unknown";
}

SwimTiming swim_profile(MembershipProfile profile) {
  SwimTiming t;  // LAN
  if (profile == MembershipProfile::kWan) {
    t.probe_interval_ms = 1000;
    t.probe_timeout_ms = 500;
    t.indirect_probes = 3;
    t.suspicion_mult = 4;
    t.suspicion_max_mult = 6;
    t.retransmit_mult = 4;
  }
  return t;
}

namespace {
Liveness liveness_of(MemberState s) {
  switch (s) {
    case MemberState::kAlive:
      return Liveness::kAlive;
    case MemberState::kSuspect:
      return Liveness::kSuspect;
    case MemberState::kDead:
      return Liveness::kDead;
  }
  return Liveness::kDead;
}
// Forwarded pings (ping-req) waiting for their target's ack, at most.
constexpr std::size_t kMaxForwards = 64;
}  // namespace

SwimDetector::SwimDetector(AgentKey self, const SwimTiming& timing, std::uint64_t seed)
    : self_(self), timing_(timing), rng_(seed) {}

std::uint64_t SwimDetector::next_random() {  // splitmix64
  std::uint64_t z = (rng_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::size_t SwimDetector::members_alive() const {
  std::size_t n = 1;
  for (const auto& [k, m] : members_) n += m.state != MemberState::kDead ? 1 : 0;
  return n;
}

std::int64_t SwimDetector::probe_interval_ms() const {
  return timing_.probe_interval_ms * (health_ + 1);
}

std::int64_t SwimDetector::probe_timeout_ms() const {
  return timing_.probe_timeout_ms * (health_ + 1);
}

std::int64_t SwimDetector::suspicion_timeout_ms(std::size_t confirmations) const {
  double n = static_cast<double>(members_.size() + 1);
  double min = timing_.suspicion_mult * std::max(1.0, std::log10(n)) *
               static_cast<double>(timing_.probe_interval_ms);
  double max = timing_.suspicion_max_mult * min;
  double k = std::min<double>(timing_.indirect_probes, n - 2);
  if (k < 1 || static_cast<double>(confirmations) >= k) return static_cast<std::int64_t>(min);
  double t = max - (max - min) * std::log(static_cast<double>(confirmations) + 1) / std::log(k + 1);
  return static_cast<std::int64_t>(std::max(min, std::floor(t)));
}

int SwimDetector::retransmit_limit() const {
  double n = static_cast<double>(members_.size() + 1);
  return timing_.retransmit_mult * static_cast<int>(std::ceil(std::log10(n + 1)));
}

std::int64_t SwimDetector::window_ms() const {
  return 2 * probe_interval_ms() + probe_timeout_ms() + suspicion_timeout_ms(0);
}

void SwimDetector::learned(const AgentKey& peer, std::int64_t now_ms) {
  if (peer == self_) return;
  auto [it, inserted] = members_.try_emplace(peer);
  if (!inserted) return;
  ++generation_;
  changed_.insert(peer);
  it->second.last_heard_ms = now_ms;
  // Into the rest of this round, at a random place.
  std::size_t rest = order_.size() - std::min(order_index_, order_.size());
  std::size_t at = std::min(order_index_, order_.size()) + next_random() % (rest + 1);
  order_.insert(order_.begin() + static_cast<std::ptrdiff_t>(at), peer);
}

void SwimDetector::heard_from(const AgentKey& peer, std::int64_t now_ms) {
  auto it = members_.find(peer);
  if (it == members_.end()) return;
  Member& m = it->second;
  m.last_heard_ms = std::max(m.last_heard_ms, now_ms);
  if (m.state != MemberState::kAlive && now_ms - m.last_reprobe_ms >= timing_.probe_interval_ms) {
    m.reprobe = true;
    reprobes_.insert(peer);
  }
}

Liveness SwimDetector::liveness(const AgentKey& peer, std::int64_t now_ms) const {
  auto it = members_.find(peer);
  if (it == members_.end()) return Liveness::kDead;
  const Member& m = it->second;
  if (m.state == MemberState::kSuspect &&
      now_ms - m.suspect_since_ms >= suspicion_timeout_ms(m.suspecters.size() - 1)) {
    return Liveness::kDead;  // expires at the next probes(); the same answer meanwhile
  }
  return liveness_of(m.state);
}

std::int64_t SwimDetector::next_expiry_ms() const {
  std::int64_t next = INT64_MAX;
  for (const AgentKey& key : suspects_) {
    auto it = members_.find(key);
    if (it == members_.end()) continue;
    const Member& m = it->second;
    next = std::min(next, m.suspect_since_ms + suspicion_timeout_ms(m.suspecters.size() - 1));
  }
  return next;
}

std::optional<std::vector<AgentKey>> SwimDetector::take_changed() {
  std::set<AgentKey> keys = std::move(changed_);
  changed_.clear();
  keys.insert(suspects_.begin(), suspects_.end());
  return std::vector<AgentKey>(keys.begin(), keys.end());
}

std::optional<std::int64_t> SwimDetector::last_heard_ms(const AgentKey& peer) const {
  auto it = members_.find(peer);
  if (it == members_.end()) return std::nullopt;
  return it->second.last_heard_ms;
}

std::vector<AgentKey> SwimDetector::heartbeat_targets(std::int64_t now_ms) {
  (void)now_ms;
  return {};
}

std::vector<AgentKey> SwimDetector::peers() const {
  std::vector<AgentKey> out;
  out.reserve(members_.size());
  for (const auto& [k, m] : members_) out.push_back(k);
  return out;
}

void SwimDetector::adjust_health(int delta) {
  health_ = std::clamp(health_ + delta, 0, timing_.max_local_health);
}

void SwimDetector::queue(const MemberUpdate& u) {
  auto [it, fresh] = queue_.try_emplace(u.agent, Queued{u, 0});
  if (!fresh) {
    queue_order_.erase({it->second.sent, u.agent});
    it->second = Queued{u, 0};
  }
  queue_order_.insert({0, u.agent});
}

void SwimDetector::refute(std::uint64_t accused) {
  incarnation_ = std::max(incarnation_, accused) + 1;
  adjust_health(1);
  queue(MemberUpdate{self_, incarnation_, MemberState::kAlive, std::nullopt});
}

void SwimDetector::set_state(const AgentKey& key, Member& m, MemberState state,
                             std::uint64_t incarnation, std::int64_t now_ms,
                             std::optional<AgentKey> origin) {
  ++generation_;
  changed_.insert(key);
  m.state = state;
  m.incarnation = incarnation;
  m.suspecters.clear();
  if (state == MemberState::kSuspect) {
    m.suspect_since_ms = now_ms;
    m.suspecters.insert(origin.value_or(self_));
    suspects_.insert(key);
  } else {
    suspects_.erase(key);
  }
  queue(MemberUpdate{key, incarnation, state,
                     state == MemberState::kSuspect ? origin : std::nullopt});
}

void SwimDetector::apply(const MemberUpdate& u, const AgentKey& from, std::int64_t now_ms) {
  if (u.agent == self_) {
    if (u.state != MemberState::kAlive && u.incarnation >= incarnation_) refute(u.incarnation);
    return;
  }
  auto it = members_.find(u.agent);
  if (it == members_.end()) return;  // learned of by adverts and hellos, not by gossip
  Member& m = it->second;
  switch (u.state) {
    case MemberState::kAlive:
      if (u.incarnation > m.incarnation) {
        set_state(u.agent, m, MemberState::kAlive, u.incarnation, now_ms, std::nullopt);
      }
      break;
    case MemberState::kSuspect: {
      if (u.incarnation < m.incarnation || m.state == MemberState::kDead) break;
      AgentKey origin = u.origin.value_or(from);
      if (m.state == MemberState::kSuspect && u.incarnation == m.incarnation) {
        // An independent confirmation shortens the suspicion (Lifeguard).
        if (m.suspecters.insert(origin).second) {
          ++generation_;  // a shorter suspicion timeout
          queue(MemberUpdate{u.agent, m.incarnation, MemberState::kSuspect, origin});
        }
        break;
      }
      set_state(u.agent, m, MemberState::kSuspect, u.incarnation, now_ms, origin);
      break;
    }
    case MemberState::kDead:
      if (u.incarnation < m.incarnation ||
          (m.state == MemberState::kDead && u.incarnation == m.incarnation)) {
        break;
      }
      set_state(u.agent, m, MemberState::kDead, u.incarnation, now_ms, std::nullopt);
      break;
  }
}

void SwimDetector::expire_suspicions(std::int64_t now_ms) {
  std::vector<AgentKey> expired;
  for (const AgentKey& k : suspects_) {
    const Member& m = members_.at(k);
    if (now_ms - m.suspect_since_ms >= suspicion_timeout_ms(m.suspecters.size() - 1)) {
      expired.push_back(k);
    }
  }
  for (const AgentKey& k : expired) {
    Member& m = members_.at(k);
    set_state(k, m, MemberState::kDead, m.incarnation, now_ms, std::nullopt);
  }
}

FailureDetector::Send SwimDetector::make(const AgentKey& to, Probe::Kind kind, std::uint64_t seq,
                                         std::optional<AgentKey> target) {
  Send s{to, Probe{}};
  Probe& p = s.probe;
  p.kind = kind;
  p.seq = seq;
  p.target = target;
  p.incarnation = incarnation_;
  // What we hold against the receiver first: it refutes.
  if (auto it = members_.find(to); it != members_.end() && it->second.state != MemberState::kAlive) {
    std::optional<AgentKey> origin;
    if (it->second.state == MemberState::kSuspect) origin = *it->second.suspecters.begin();
    p.updates.push_back(MemberUpdate{to, it->second.incarnation, it->second.state, origin});
  }
  if (queue_.empty()) return s;
  // Then the updates sent least often (ties in key order), but one about the receiver
  // that is not "alive" (it went first).
  std::size_t room = kMaxProbeUpdates - p.updates.size();
  std::vector<std::map<AgentKey, Queued>::iterator> pick;
  for (auto o = queue_order_.begin(); o != queue_order_.end() && pick.size() < room; ++o) {
    auto it = queue_.find(o->second);
    if (it->first != to || it->second.update.state == MemberState::kAlive) pick.push_back(it);
  }
  int limit = retransmit_limit();
  for (auto it : pick) {
    p.updates.push_back(it->second.update);
    queue_order_.erase({it->second.sent, it->first});
    if (++it->second.sent >= limit) {
      queue_.erase(it);
    } else {
      queue_order_.insert({it->second.sent, it->first});
    }
  }
  return s;
}

std::optional<AgentKey> SwimDetector::next_target() {
  for (int round = 0; round < 2; ++round) {
    while (order_index_ < order_.size()) {
      const AgentKey& k = order_[order_index_++];
      auto it = members_.find(k);
      if (it != members_.end() && it->second.state != MemberState::kDead) return k;
    }
    // A new round: the peers not known dead, shuffled (Fisher-Yates).
    order_.clear();
    order_index_ = 0;
    for (const auto& [k, m] : members_) {
      if (m.state != MemberState::kDead) order_.push_back(k);
    }
    for (std::size_t i = order_.size(); i > 1; --i) {
      std::swap(order_[i - 1], order_[next_random() % i]);
    }
  }
  return std::nullopt;
}

std::vector<FailureDetector::Send> SwimDetector::probes(std::int64_t now_ms) {
  std::vector<Send> out;
  expire_suspicions(now_ms);
  for (auto it = forwards_.begin(); it != forwards_.end();) {
    Forward& f = it->second;
    if (!f.nacked && now_ms >= f.nack_ms) {
      f.nacked = true;
      out.push_back(make(f.requester, Probe::Kind::kNack, f.their_seq, f.target));
    }
    it = f.expires_ms <= now_ms ? forwards_.erase(it) : std::next(it);
  }
  // No direct ack in time: ask k alive peers to probe the target.
  if (pending_ && !pending_->acked && !pending_->indirect &&
      now_ms >= pending_->sent_ms + probe_timeout_ms()) {
    pending_->indirect = true;
    std::vector<AgentKey> helpers;
    for (const auto& [k, m] : members_) {
      if (m.state == MemberState::kAlive && k != pending_->target) helpers.push_back(k);
    }
    std::size_t k = std::min<std::size_t>(static_cast<std::size_t>(timing_.indirect_probes),
                                          helpers.size());
    for (std::size_t i = 0; i < k; ++i) {
      std::swap(helpers[i], helpers[i + next_random() % (helpers.size() - i)]);
      out.push_back(make(helpers[i], Probe::Kind::kPingReq, pending_->seq, pending_->target));
    }
    pending_->helpers = static_cast<int>(k);
  }
  if (now_ms >= next_probe_ms_) {
    // The end of a period: judge its probe.
    if (pending_) {
      if (pending_->acked) {
        adjust_health(-1);
      } else {
        // Lifeguard: each helper that did not even nack counts against this agent's own
        // health (its messages, or its processing of theirs, are late); a target that
        // every helper nacked is down, and says nothing about this agent.
        adjust_health(pending_->helpers > 0 ? pending_->helpers - pending_->nacks : 1);
        auto it = members_.find(pending_->target);
        if (it != members_.end() && it->second.state == MemberState::kAlive) {
          set_state(it->first, it->second, MemberState::kSuspect, it->second.incarnation, now_ms,
                    self_);
        } else if (it != members_.end() && it->second.state == MemberState::kSuspect &&
                   it->second.suspecters.insert(self_).second) {
          // Suspected by another (its gossip came first), and our own probe failed too:
          // an independent confirmation, which shortens the suspicion here and, gossiped,
          // at every agent that suspects it (Lifeguard). Without it a mesh of three
          // waited out the longest suspicion whenever the gossip outran the probe.
          ++generation_;
          queue(MemberUpdate{it->first, it->second.incarnation, MemberState::kSuspect, self_});
        }
      }
      pending_.reset();
    }
    ++periods_;
    if (auto t = next_target()) {
      pending_ = Pending{*t, next_seq_++, now_ms};
      ++probes_started_;
      out.push_back(make(*t, Probe::Kind::kPing, pending_->seq));
    }
    next_probe_ms_ = now_ms + probe_interval_ms();
    if (periods_ % kDeadProbeEvery == 0) {
      std::vector<AgentKey> dead;
      for (const auto& [k, m] : members_) {
        if (m.state == MemberState::kDead) dead.push_back(k);
      }
      // At random: agents that all hold the same peers dead each try a different one, so
      // a healed partition revives many per period (their refutations spread by gossip).
      if (!dead.empty()) out.push_back(make(dead[next_random() % dead.size()], Probe::Kind::kPing, 0));
    }
  }
  // Suspected or dead peers heard from directly: ping them now, so they refute.
  for (const AgentKey& k : std::exchange(reprobes_, {})) {
    auto it = members_.find(k);
    if (it == members_.end() || !it->second.reprobe) continue;
    Member& m = it->second;
    m.reprobe = false;
    if (m.state == MemberState::kAlive) continue;
    m.last_reprobe_ms = now_ms;
    out.push_back(make(k, Probe::Kind::kPing, 0));
  }
  return out;
}

std::vector<FailureDetector::Send> SwimDetector::on_probe(const AgentKey& from, const Probe& probe,
                                                          std::int64_t now_ms) {
  std::vector<Send> out;
  auto it = members_.find(from);
  if (it == members_.end() || from == self_) return out;
  it->second.last_heard_ms = std::max(it->second.last_heard_ms, now_ms);
  apply(MemberUpdate{from, probe.incarnation, MemberState::kAlive, std::nullopt}, from, now_ms);
  for (const auto& u : probe.updates) apply(u, from, now_ms);
  switch (probe.kind) {
    case Probe::Kind::kPing:
      out.push_back(make(from, Probe::Kind::kAck, probe.seq));
      break;
    case Probe::Kind::kPingReq: {
      if (!probe.target || *probe.target == from) break;
      if (*probe.target == self_) {
        out.push_back(make(from, Probe::Kind::kAck, probe.seq, self_));
        break;
      }
      if (!members_.count(*probe.target) || forwards_.size() >= kMaxForwards) break;
      std::uint64_t seq = next_seq_++;
      // The nack goes half a probe timeout later (Lifeguard: 80%; less here, where
      // periods are short against the loop's tick), so it reaches the requester before
      // its period ends (the ping-req left it a probe timeout into the period).
      forwards_[seq] = Forward{from, probe.seq, *probe.target, now_ms + probe_interval_ms(),
                               now_ms + probe_timeout_ms() / 2};
      out.push_back(make(*probe.target, Probe::Kind::kPing, seq));
      break;
    }
    case Probe::Kind::kAck: {
      if (probe.seq == 0) break;
      if (pending_ && probe.seq == pending_->seq &&
          (from == pending_->target || (probe.target && *probe.target == pending_->target))) {
        pending_->acked = true;
        break;
      }
      auto f = forwards_.find(probe.seq);
      if (f != forwards_.end() && f->second.target == from) {
        out.push_back(make(f->second.requester, Probe::Kind::kAck, f->second.their_seq, from));
        forwards_.erase(f);
      }
      break;
    }
    case Probe::Kind::kNack:
      if (pending_ && probe.seq == pending_->seq && !pending_->acked && probe.target &&
          *probe.target == pending_->target && pending_->nacks < pending_->helpers) {
        ++pending_->nacks;
      }
      break;
  }
  return out;
}

}  // namespace vow::promises
