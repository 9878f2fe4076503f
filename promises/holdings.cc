#include "promises/holdings.h"

#include <algorithm>
#include <iterator>

namespace vow::promises {

void Holdings::add(const Digest& digest) {
  ++generation_;
  if (held_.insert(digest).second) {
    pending_.insert(digest);
    touched_.insert(digest);
  }
  auto it = known_refs_.find(digest);
  if (it != known_refs_.end()) {
    for (const auto& e : it->second.entries) {
      if (held_.insert(e.digest).second) {
        pending_.insert(e.digest);
        touched_.insert(e.digest);
      }
    }
  }
}

bool Holdings::remove(const Digest& digest) {
  if (held_.erase(digest) == 0) return false;
  ++generation_;
  pending_.insert(digest);
  touched_.insert(digest);
  return true;
}

void Holdings::changed() {
  ++version_;
  for (const auto& d : pending_) {
    auto [it, fresh] = changed_at_.try_emplace(d, version_);
    if (!fresh) {
      log_.erase({it->second, d});
      it->second = version_;
    }
    log_.emplace(version_, d);
  }
  pending_.clear();
  // Past the bound, the oldest versions' changes go: deltas from before them are not
  // complete any more.
  while (log_.size() > kMaxHoldingsLog) {
    std::uint64_t oldest = log_.begin()->first;
    while (!log_.empty() && log_.begin()->first == oldest) {
      changed_at_.erase(log_.begin()->second);
      log_.erase(log_.begin());
    }
    log_floor_ = oldest;
  }
}

Have Holdings::have_since(std::uint64_t incarnation, std::uint64_t version) const {
  if (incarnation == 0 || incarnation != incarnation_ || version < log_floor_ ||
      version > version_) {
    return have();
  }
  Have d;
  d.incarnation = incarnation_;
  d.version = version_;
  d.delta = true;
  d.base_version = version;
  for (auto it = log_.lower_bound({version + 1, Digest{}}); it != log_.end(); ++it) {
    if (d.digests.size() + d.removed.size() >= std::min(held_.size(), kMaxHoldingsPerHave)) {
      return have();  // the set itself is no longer than the changes
    }
    (held_.count(it->second) ? d.digests : d.removed).push_back(it->second);
  }
  return d;
}

bool Holdings::available(const ArtifactRef& ref) const {
  if (held_.count(ref.digest)) return true;
  if (!ref.is_tree) return false;
  if (ref.entries.empty()) return ref.size_bytes == 0 && known_refs_.count(ref.digest) == 0;
  return std::all_of(ref.entries.begin(), ref.entries.end(),
                     [&](const TreeEntry& e) { return held_.count(e.digest) != 0; });
}

Have Holdings::have() const {
  Have have;
  have.incarnation = incarnation_;
  have.version = version_;
  have.digests.assign(held_.begin(), held_.end());
  if (have.digests.size() > kMaxHoldingsPerHave) have.digests.resize(kMaxHoldingsPerHave);
  return have;
}

std::pair<std::uint64_t, std::uint64_t> Holdings::seen(const AgentKey& peer) const {
  auto it = peers_.find(peer);
  return it == peers_.end() ? std::pair<std::uint64_t, std::uint64_t>{0, 0} : it->second.seen;
}

void Holdings::on_have(const AgentKey& peer, const Have& have, std::int64_t now_ms) {
  std::pair<std::uint64_t, std::uint64_t> v{have.incarnation, have.version};
  if (have.delta) {
    auto it = peers_.find(peer);
    if (it == peers_.end()) return;
    PeerHoldings& p = it->second;
    if (p.seen != std::pair<std::uint64_t, std::uint64_t>{have.incarnation, have.base_version} ||
        v < p.seen) {
      return;
    }
    p.seen = v;
    ++generation_;
    for (const auto& d : have.removed) {
      if (p.holdings.erase(d) != 0) touched_.insert(d);
    }
    for (const auto& d : have.digests) {
      if (p.holdings.insert(d).second) touched_.insert(d);
    }
    prune(p, now_ms);
    return;
  }
  auto [it, first] = peers_.try_emplace(peer);
  PeerHoldings& p = it->second;
  if (!first && v < p.seen) return;  // an older Have
  p.seen = v;
  ++generation_;
  std::set<Digest> now(have.digests.begin(), have.digests.end());
  std::set_symmetric_difference(p.holdings.begin(), p.holdings.end(), now.begin(), now.end(),
                                std::inserter(touched_, touched_.end()));
  p.holdings = std::move(now);
  prune(p, now_ms);
}

bool Holdings::announced_recently(const PeerHoldings& p, const Digest& digest,
                                  std::int64_t now_ms) const {
  auto it = p.announced.find(digest);
  return it != p.announced.end() && now_ms - it->second < members_.detection_window_ms();
}

void Holdings::prune(PeerHoldings& p, std::int64_t now_ms) {
  for (auto it = p.announced.begin(); it != p.announced.end();) {
    bool done =
        p.holdings.count(it->first) != 0 || now_ms - it->second >= members_.detection_window_ms();
    if (done) {
      touched_.insert(it->first);
      ++generation_;
    }
    it = done ? p.announced.erase(it) : std::next(it);
  }
}

void Holdings::prune(std::int64_t now_ms) {
  for (auto& [key, p] : peers_) prune(p, now_ms);
}

void Holdings::note(const Statement& st, std::int64_t now_ms) {
  // A peer whose holdings we know (a Have arrived) is a holder of what it announces
  // now, until its next Have says otherwise (PeerHoldings::announced).
  auto peer = peers_.find(st.author);
  auto presume = [&](const Digest& d) {
    ++generation_;
    touched_.insert(d);
    presumed_[d].insert(st.author);
    if (peer != peers_.end() && !peer->second.holdings.count(d)) {
      peer->second.announced.emplace(d, now_ms);
    }
  };
  auto note_ref = [&](const ArtifactRef& ref) {
    presume(ref.digest);
    known_refs_.emplace(ref.digest, ref);
    for (const auto& e : ref.entries) presume(e.digest);
  };
  if (const auto* r = std::get_if<JobResult>(&st.body)) {
    if (r->ok) {
      for (const auto& o : r->outputs) note_ref(o.artifact);
    }
    for (const auto& b : r->bindings) presume(b.digest);  // the inputs it used
  } else if (const auto* sv = std::get_if<SourceVersion>(&st.body)) {
    note_ref(sv->artifact);
  } else if (const auto* acc = std::get_if<Accept>(&st.body)) {
    for (const auto& b : acc->bindings) presume(b.digest);
  }
}

// Agents that have announced nothing yet are holders if the ledger presumes so; the
// presumed come first (the producer is the best source).
std::vector<AgentKey> Holdings::live_holders(const Digest& digest, std::int64_t now_ms) const {
  std::vector<AgentKey> first, rest;
  auto pres = presumed_.find(digest);
  for (const auto& [key, m] : members_.peers()) {
    if (!members_.is_live(key, now_ms)) continue;
    bool presumed = pres != presumed_.end() && pres->second.count(key) != 0;
    auto p = peers_.find(key);
    bool holds = p != peers_.end() ? p->second.holdings.count(digest) != 0 ||
                                         announced_recently(p->second, digest, now_ms)
                                   : presumed;
    if (!holds) continue;
    (presumed ? first : rest).push_back(key);
  }
  first.insert(first.end(), rest.begin(), rest.end());
  return first;
}

void Holdings::for_each_held(
    const std::vector<Digest>& sorted, std::int64_t now_ms,
    const std::function<void(const Digest&, const std::vector<AgentKey>&)>& fn) const {
  struct Live {
    const AgentKey* key;
    const PeerHoldings* p;  // nullptr: no Have from it yet
    std::set<Digest>::const_iterator at;
  };
  std::vector<Live> live;
  for (const auto& [key, m] : members_.peers()) {
    if (!members_.is_live(key, now_ms)) continue;
    auto p = peers_.find(key);
    if (p == peers_.end()) {
      live.push_back(Live{&key, nullptr, {}});
    } else {
      live.push_back(Live{&key, &p->second, p->second.holdings.begin()});
    }
  }
  auto here = held_.begin();
  auto pres = presumed_.begin();
  std::vector<AgentKey> first, rest;
  for (const Digest& d : sorted) {
    while (here != held_.end() && *here < d) ++here;
    if (here == held_.end()) return;
    if (d < *here) continue;
    while (pres != presumed_.end() && pres->first < d) ++pres;
    const std::set<AgentKey>* presumed =
        pres != presumed_.end() && pres->first == d ? &pres->second : nullptr;
    first.clear();
    rest.clear();
    for (auto& l : live) {
      bool is_presumed = presumed && presumed->count(*l.key) != 0;
      bool holds = is_presumed;
      if (l.p) {
        while (l.at != l.p->holdings.end() && *l.at < d) ++l.at;
        holds = (l.at != l.p->holdings.end() && *l.at == d) ||
                announced_recently(*l.p, d, now_ms);
      }
      if (holds) (is_presumed ? first : rest).push_back(*l.key);
    }
    first.insert(first.end(), rest.begin(), rest.end());
    fn(d, first);
  }
}

}  // namespace vow::promises
