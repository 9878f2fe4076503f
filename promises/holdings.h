// Holdings: which artifacts this agent holds and which live peers hold (or are presumed
// to hold) each artifact (docs/coordination.md section 7). A peer's announced holdings
// (its latest Have) are authoritative; for a peer that announced nothing the ledger
// presumes it holds what it produced and accepted; what its statements name after its
// last Have counts too, for one detection window.
//
// Reads liveness from a Membership it borrows (the Core owns both, Membership first).
// Pure; times are the caller's monotonic milliseconds. Not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "promises/core.h"
#include "promises/membership.h"

namespace vow::promises {

// Changed digests the holdings keep to answer a HaveRequest with a delta (their latest
// change each, about 130 bytes of memory apiece); a requester whose version is older
// than the oldest change dropped is sent the complete set.
inline constexpr std::size_t kMaxHoldingsLog = 16'384;

class Holdings {
 public:
  explicit Holdings(const Membership& members) : members_(members) {}

  // ---- this agent's store ----
  const std::set<Digest>& held() const { return held_; }
  bool holds(const Digest& digest) const { return held_.count(digest) != 0; }
  // Held now, with its entries if it is a known tree.
  void add(const Digest& digest);
  // Listed by the store at start (the listing names tree entries on their own).
  void restore(const Digest& digest) {
    held_.insert(digest);
    ++generation_;
  }
  // Lost from the store (or collected); false if it was not held.
  bool remove(const Digest& digest);
  // Held here, or composable from held entries.
  bool available(const ArtifactRef& ref) const;
  // The set changed: a new version (peers see it in the heartbeat and ask again); what
  // was added and removed since the previous version is logged for deltas.
  void changed();
  void set_incarnation(std::uint64_t incarnation) { incarnation_ = incarnation; }
  std::uint64_t incarnation() const { return incarnation_; }
  std::uint64_t version() const { return version_; }
  Have have() const;  // the complete set, at most kMaxHoldingsPerHave digests
  // The answer to a HaveRequest from a peer that last applied (incarnation, version):
  // the changes since that version when the log still has them all and they are fewer
  // than the set, else the complete set.
  Have have_since(std::uint64_t incarnation, std::uint64_t version) const;

  // ---- peers' ----
  // (incarnation, version) of the latest Have from `peer` ({0, 0}: none).
  std::pair<std::uint64_t, std::uint64_t> seen(const AgentKey& peer) const;
  // What the Haves of `peer` said it holds (nullptr: none arrived).
  const std::set<Digest>* of(const AgentKey& peer) const {
    auto it = peers_.find(peer);
    return it == peers_.end() ? nullptr : &it->second.holdings;
  }
  // A complete set replaces what `peer` was known to hold; a delta applies only to the
  // version it names (else it is ignored: the next heartbeat shows the versions differ,
  // and the HaveRequest it causes names the version held here). Older Haves are ignored.
  void on_have(const AgentKey& peer, const Have& have, std::int64_t now_ms);
  // A statement just added to the ledger: the holders it names.
  void note(const Statement& st, std::int64_t now_ms);
  // Drops announcements a Have has confirmed or that are older than a detection window.
  void prune(std::int64_t now_ms);
  // Live peers (not this agent) holding `digest`, presumed holders first.
  std::vector<AgentKey> live_holders(const Digest& digest, std::int64_t now_ms) const;
  // For each digest of `sorted` (ascending, no repeats) held here, in order: the live
  // peers holding it, as live_holders() names them. One walk along this agent's set and
  // each live peer's, not a lookup in each per digest (a garbage collection pass asks
  // this of every digest its plan names: at 100,000 jobs, lookups one by one held the
  // event loop for one to two seconds).
  void for_each_held(const std::vector<Digest>& sorted, std::int64_t now_ms,
                     const std::function<void(const Digest&, const std::vector<AgentKey>&)>& fn)
      const;
  // Digests whose holders (here, or a peer's by Have, statement or an announcement that
  // expired in prune()) may have changed since the last call: what the replication check
  // looks at between its full walks. Liveness is not tracked here.
  std::set<Digest> take_touched() { return std::exchange(touched_, {}); }
  // Counts every change to what is known here about who holds what (this agent's set,
  // a peer's Have, a statement naming holders, an announcement expiring): while it stays
  // the same, so does every answer above at a given liveness of peers.
  std::uint64_t generation() const { return generation_; }

 private:
  struct PeerHoldings {
    std::pair<std::uint64_t, std::uint64_t> seen{0, 0};  // (incarnation, version)
    std::set<Digest> holdings;
    // Digests its statements named after its last Have, with when we learned. Without
    // this, a fresh output waits a heartbeat and a Have round trip before anyone fetches
    // it. Pruned on each Have and by prune(), so it holds at most a detection window's
    // worth of digests.
    std::map<Digest, std::int64_t> announced;
  };
  bool announced_recently(const PeerHoldings& p, const Digest& digest, std::int64_t now_ms) const;
  void prune(PeerHoldings& p, std::int64_t now_ms);

  const Membership& members_;
  std::set<Digest> held_;
  std::uint64_t incarnation_ = 0;
  std::uint64_t version_ = 0;
  // Change log: digests added or removed since the last changed(), and for each changed
  // digest the version of its latest change (indexed both ways). Deltas from a version
  // at or above log_floor_ are complete.
  std::set<Digest> pending_;
  std::map<Digest, std::uint64_t> changed_at_;
  std::set<std::pair<std::uint64_t, Digest>> log_;
  std::uint64_t log_floor_ = 0;
  std::map<AgentKey, PeerHoldings> peers_;  // peers a Have arrived from
  // Holders presumed from the ledger (result authors, source providers, consumers).
  std::map<Digest, std::set<AgentKey>> presumed_;
  std::map<Digest, ArtifactRef> known_refs_;  // artifacts named in results and sources
  std::set<Digest> touched_;                   // see take_touched()
  std::uint64_t generation_ = 0;               // see generation()
};

}  // namespace vow::promises
