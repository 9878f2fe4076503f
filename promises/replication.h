// Replication: keeps `replicas` live copies of every canonical output and of the latest
// version of every source, and tells which done jobs must run again because no live
// agent holds their output any more (regeneration; docs/coordination.md section 7).
//
// Borrows the core's ledger, claim book, holdings and membership (the Core owns them
// all and builds this last). Emits ReplicateArtifact actions and events into the Output
// it is given. Pure; times are the caller's monotonic milliseconds. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <set>

#include "promises/claim_book.h"
#include "promises/core.h"
#include "promises/holdings.h"
#include "promises/membership.h"

namespace vow::promises {

class Replication {
 public:
  Replication(AgentKey self, int replicas, const Ledger& ledger, const ClaimBook& book,
              const Holdings& holdings, const Membership& members)
      : self_(self),
        replicas_(replicas),
        ledger_(ledger),
        book_(book),
        holdings_(holdings),
        members_(members) {}

  // The periodic check (every kReplicationCheckMs, see due()): asks for missing copies
  // this agent ranks first for, and recomputes regen_wanted() over the done jobs of the
  // stages in `own_stages`.
  void check(const Plan& plan, const std::map<Digest, int>& own_stages, std::int64_t now_ms,
             Output& out);
  bool due(std::int64_t now_ms) const { return now_ms >= next_check_ms_; }
  std::int64_t next_check_ms() const { return next_check_ms_; }
  // A canonical output of `job` (which has one) has had no live holder for a detection
  // window, and a re-run can make it again (the job is not known non-deterministic).
  bool needs_regeneration(const Digest& job, std::int64_t now_ms, Output& out);
  // Done jobs of own stages whose output is lost, as of the last check.
  const std::set<Digest>& regen_wanted() const { return regen_wanted_; }
  // A replication fetch ended (fetched or failed): it may be asked again.
  void fetch_ended(const Digest& digest) { fetches_.erase(digest); }

 private:
  AgentKey self_;
  int replicas_;
  const Ledger& ledger_;
  const ClaimBook& book_;
  const Holdings& holdings_;
  const Membership& members_;
  std::int64_t next_check_ms_ = 0;
  std::map<Digest, std::int64_t> fetches_;        // replication fetches in flight -> deadline
  std::map<Digest, std::int64_t> lost_since_ms_;  // canonical outputs with no live holder
  std::set<Digest> regen_wanted_;
  std::set<Digest> unrecoverable_reported_;  // jobs whose lost output cannot be made again
};

}  // namespace vow::promises
