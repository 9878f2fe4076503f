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
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "promises/core.h"
#include "promises/membership.h"

namespace vow::promises {

class Holdings {
 public:
  explicit Holdings(const Membership& members) : members_(members) {}

  // ---- this agent's store ----
  const std::set<Digest>& held() const { return held_; }
  bool holds(const Digest& digest) const { return held_.count(digest) != 0; }
  // Held now, with its entries if it is a known tree.
  void add(const Digest& digest);
  // Listed by the store at start (the listing names tree entries on their own).
  void restore(const Digest& digest) { held_.insert(digest); }
  // Lost from the store; false if it was not held.
  bool remove(const Digest& digest) { return held_.erase(digest) != 0; }
  // Held here, or composable from held entries.
  bool available(const ArtifactRef& ref) const;
  // The set changed: peers pull it again (a new version in the heartbeat).
  void changed() { ++version_; }
  void set_incarnation(std::uint64_t incarnation) { incarnation_ = incarnation; }
  std::uint64_t incarnation() const { return incarnation_; }
  std::uint64_t version() const { return version_; }
  Have have() const;  // at most kMaxHoldingsPerHave digests

  // ---- peers' ----
  // (incarnation, version) of the latest Have from `peer` ({0, 0}: none).
  std::pair<std::uint64_t, std::uint64_t> seen(const AgentKey& peer) const;
  void on_have(const AgentKey& peer, const Have& have, std::int64_t now_ms);
  // A statement just added to the ledger: the holders it names.
  void note(const Statement& st, std::int64_t now_ms);
  // Drops announcements a Have has confirmed or that are older than a detection window.
  void prune(std::int64_t now_ms);
  // Live peers (not this agent) holding `digest`, presumed holders first.
  std::vector<AgentKey> live_holders(const Digest& digest, std::int64_t now_ms) const;

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
  std::map<AgentKey, PeerHoldings> peers_;  // peers a Have arrived from
  // Holders presumed from the ledger (result authors, source providers, consumers).
  std::map<Digest, std::set<AgentKey>> presumed_;
  std::map<Digest, ArtifactRef> known_refs_;  // artifacts named in results and sources
};

}  // namespace vow::promises
