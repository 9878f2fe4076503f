// ClaimBook: what the ledger says about each job's claims and results, as the rules of
// docs/coordination.md sections 5 and 6 read it: which claims and results are bound
// (rules 3 and 4), the canonical result (the min-register over bound results), failed
// attempts, the highest bound epoch, releases, and this agent's own open claims
// (without own result or release). `outranks` is the one tie-break between two claims
// of a job at one epoch.
//
// Bound claim (rule 4): its author does not equivocate, the author's advert in force
// when it claimed (Ledger::advert_at) promises the claim's stage digest with capacity
// > 0, and its epoch is earned: epoch 1 naming no claim, or epoch e > 1 naming a bound
// claim of the same job at e - 1 (Claim::supersedes). Bound result (rule 3): its author
// does not equivocate and holds a bound claim of the job at the result's epoch,
// published before it. Everything else is kept as evidence and fences, stands and
// counts for nothing.
//
// A Retry statement forgives a job's failures up to its epoch: they no longer count as
// failed attempts.
//
// Borrows the core's Ledger (which outlives it) and caches per-job summaries, dropped by
// note() when a statement of the job arrives (all of them when an advert arrives or an
// author is found to equivocate). Not thread-safe (owned by one Core).
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "promises/ledger.h"
#include "promises/statement.h"

namespace vow::promises {

// The highest epoch a claim may have; a job whose bound epoch reached it is claimed no
// more (epochs never wrap).
inline constexpr std::uint32_t kMaxEpoch = std::numeric_limits<std::uint32_t>::max();

enum class ClaimBinding : std::uint8_t {
  kBound,
  kEquivocator,  // its author equivocated
  kNotPromised,  // the advert in force when it claimed does not promise the stage
  kNotEarned,    // epoch 0, or an epoch not justified by a bound claim at epoch - 1
};
enum class ResultBinding : std::uint8_t {
  kBound,
  kEquivocator,  // its author equivocated
  kNoClaim,      // its author holds no bound claim of the job at that epoch before it
};
const char* claim_binding_name(ClaimBinding binding);
const char* result_binding_name(ResultBinding binding);

class ClaimBook {
 public:
  ClaimBook(const Ledger& ledger, AgentKey self) : ledger_(ledger), self_(self) {}

  // A statement just added to the ledger. False if it made every summary stale (an
  // advert in force for claims its author made after it).
  bool note(const Statement& st);
  // Every cached summary is stale (an author was found to equivocate, or a horizon
  // retired statements).
  void invalidate() { summaries_.clear(); }
  // A horizon was applied: JOBS are those it retired or settled statements of. Their
  // summaries go, and those of jobs with a claim whose predecessor is not held here (a
  // horizon may have retired it, which earns the claim its epoch); the rest stay.
  // Returns the latter: what is known of them may change too.
  std::set<Digest> invalidate(const std::set<Digest>& jobs);
  // Jobs with a claim whose predecessor is not held here (as the summaries made so far
  // found them).
  const std::set<Digest>& missing_predecessor() const { return missing_predecessor_; }
  // An own claim a horizon retires: it is not open any more.
  void retire_own(const Digest& job, std::uint32_t epoch) { open_.erase({job, epoch}); }

  // Two claims of `job` at one epoch: a's keeps it over b's (the better rendezvous score).
  static bool outranks(const Digest& job, const AgentKey& a, const AgentKey& b);

  // Bound claims and results of a job, in arrival order.
  const std::vector<const Statement*>& claims(const Digest& job) const;
  const std::vector<const Statement*>& results(const Digest& job) const;
  ClaimBinding claim_binding(const Digest& job, const Statement& claim) const;
  ResultBinding result_binding(const Digest& job, const Statement& result) const;
  // A bound claim at the highest bound epoch (the one a new claim supersedes), best
  // ranked first; nullptr if none.
  const Statement* top_claim(const Digest& job) const;

  // The canonical (least (epoch, outputs digest)) bound successful result, or nullptr;
  // among the results a horizon settled, if the job has any.
  const Statement* canonical(const Digest& job) const;
  const JobResult* canonical_result(const Digest& job) const;
  // Distinct epochs with a bound failure, above the job's latest Retry epoch.
  int failed_attempts(const Digest& job) const;
  bool failed_for_good(const Digest& job, int retries) const;
  std::uint32_t max_epoch(const Digest& job) const;  // in any bound claim or result
  // Two bound successful results with different outputs.
  bool nondeterministic(const Digest& job) const;
  bool released(const Digest& job, const AgentKey& author, std::uint32_t epoch) const;
  bool has_result(const Digest& job, const AgentKey& author, std::uint32_t epoch) const;

  // Each kept summary equal to one made afresh (a check for tests and the simulator).
  bool consistent() const;

  // Own claims without own result or release, as (job, epoch).
  const std::set<std::pair<Digest, std::uint32_t>>& open() const { return open_; }
  bool is_open(const Digest& job, std::uint32_t epoch) const {
    return open_.count({job, epoch}) != 0;
  }

 private:
  struct Summary {
    std::vector<const Statement*> claims;   // bound
    std::vector<const Statement*> results;  // bound
    // One entry per statement of the job (a few): a vector, searched in order.
    std::vector<std::pair<const Statement*, ClaimBinding>> claim_reasons;
    std::vector<std::pair<const Statement*, ResultBinding>> result_reasons;
    const Statement* canonical = nullptr;
    const Statement* top_claim = nullptr;
    int failed_attempts = 0;
    std::uint32_t max_epoch = 0;
    bool nondeterministic = false;
    bool operator==(const Summary&) const = default;
  };
  Summary make_summary(const Digest& job) const;
  const Summary& summary(const Digest& job) const;
  void bind_claims(const JobStatements& js, const Digest& job, Summary& sum) const;

  const Ledger& ledger_;
  AgentKey self_;
  // Made once per job and kept until a statement of it changes: every job's is read
  // when a plan is made (a hash map: the tree's compares were a tenth of a restart).
  mutable std::unordered_map<Digest, Summary> summaries_;
  std::map<Digest, std::uint32_t> retried_up_to_;  // job -> highest Retry epoch
  // Jobs whose summary has a claim not earned because the claim it supersedes is not
  // held (retired or not yet arrived): a horizon may change that.
  mutable std::set<Digest> missing_predecessor_;
  std::map<AgentKey, std::uint64_t> last_claim_seq_;  // author -> highest seq of its claims
  std::set<std::pair<Digest, std::uint32_t>> open_;
};

}  // namespace vow::promises
