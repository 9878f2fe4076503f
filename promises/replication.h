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
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <vector>

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
  // this agent ranks first for, and keeps regen_wanted() (the done jobs of the stages in
  // `own_stages` whose output is lost). It looks at every canonical output (a full walk,
  // kSweepJobsPerCheck planned jobs per check so that no check holds the loop for long)
  // when the plan or the set of live agents changed, and every kFullReplicationCheckMs
  // unless nothing it reads changed since the last one began; besides, at the artifacts it watches (fewer live
  // copies than wanted, or a fetch of it ended) and those whose holders changed
  // (Holdings::take_touched) or that a new canonical result named (note_canonical): a
  // check costs what changed, not every job ever done.
  void check(const Plan& plan, const std::map<Digest, int>& own_stages,
             const std::set<Digest>& touched, std::int64_t now_ms, Output& out);
  // `job` has a new canonical result while the plan stays (its outputs are looked at on
  // the next check).
  void note_canonical(const Digest& job) { noted_.insert(job); }
  bool due(std::int64_t now_ms) const { return now_ms >= next_check_ms_; }
  std::uint64_t walks() const { return generation_; }  // full walks begun
  std::int64_t next_check_ms() const { return next_check_ms_; }
  // A canonical output of `job` (which has one) has had no live holder for a detection
  // window, and a re-run can make it again (the job is not known non-deterministic).
  bool needs_regeneration(const Digest& job, std::int64_t now_ms, Output& out);
  // Done jobs of own stages whose output is lost, as of the last check.
  const std::set<Digest>& regen_wanted() const { return regen_wanted_; }
  // A replication fetch ended (fetched or failed): it may be asked again.
  void fetch_ended(const Digest& digest) {
    if (fetches_.erase(digest) != 0) watch_.insert(digest);
  }
  // Artifacts looked at by the last check (tests).
  std::size_t last_checked() const { return last_checked_; }

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
  // The canonical outputs and latest source versions known at the last full walk (and
  // noted since), each with the done jobs of own stages that produced it and the sweep
  // that last named it.
  struct Tracked {
    std::vector<Digest> jobs;
    std::uint64_t generation = 0;
  };
  std::map<Digest, Tracked> tracked_;
  // The walk over every planned job, a slice per check: its number, whether one is
  // under way, the last job it looked at, and how many it has yet to look at.
  std::uint64_t generation_ = 0;
  bool sweeping_ = false;
  std::optional<Digest> sweep_after_;
  std::size_t sweep_left_ = 0;
  std::set<Digest> watch_;   // tracked artifacts to look at again on every check
  std::set<Digest> noted_;   // jobs with a canonical result since the last check
  std::weak_ptr<const int> plan_seen_;
  std::vector<AgentKey> live_seen_;
  std::int64_t next_full_ms_ = 0;
  // What a walk reads besides the plan and who is live, when the last one began (the
  // statements held, Holdings::generation): the periodic walk is skipped while they
  // stay the same, since it would find what that one found (an idle agent at 100,000
  // jobs spent a third of its loop on it).
  std::tuple<std::uint64_t, std::uint64_t, std::uint64_t> walked_at_{0, 0, 0};
  std::size_t last_checked_ = 0;
  // Looks at one tracked artifact: asks for a copy if this agent ranks for it, keeps
  // the regeneration wishes of its jobs; whether it stays watched.
  bool look_at(const Digest& digest, const std::vector<Digest>& jobs,
               const std::vector<AgentKey>& live, std::int64_t now_ms, Output& out);
  void track(const Digest& job, const Plan& plan, const std::map<Digest, int>& own_stages);
  std::set<Digest> unrecoverable_reported_;  // jobs whose lost output cannot be made again
};

}  // namespace vow::promises
