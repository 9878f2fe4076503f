// ClaimBook: what the ledger says about each job's claims and results, as the rules of
// docs/coordination.md sections 5 and 6 read it: the canonical result (the
// min-register), failed attempts, the highest epoch, releases, and this agent's own
// open claims (without own result or release). `outranks` is the one tie-break between
// two claims of a job at one epoch. A Retry statement forgives a job's failures up to
// its epoch: they no longer count as failed attempts.
//
// Borrows the core's Ledger (which outlives it) and caches per-job summaries, dropped by
// note() when a statement of the job arrives. Not thread-safe (owned by one Core).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <utility>

#include "promises/ledger.h"
#include "promises/statement.h"

namespace vow::promises {

class ClaimBook {
 public:
  ClaimBook(const Ledger& ledger, AgentKey self) : ledger_(ledger), self_(self) {}

  // A statement just added to the ledger.
  void note(const Statement& st);

  // Two claims of `job` at one epoch: a's keeps it over b's (the better rendezvous score).
  static bool outranks(const Digest& job, const AgentKey& a, const AgentKey& b);

  // The canonical (least (epoch, outputs digest)) successful result, or nullptr.
  const Statement* canonical(const Digest& job) const;
  const JobResult* canonical_result(const Digest& job) const;
  // Distinct epochs with a failure, above the job's latest Retry epoch.
  int failed_attempts(const Digest& job) const;
  bool failed_for_good(const Digest& job, int retries) const;
  std::uint32_t max_epoch(const Digest& job) const;  // in any claim or result
  bool released(const Digest& job, const AgentKey& author, std::uint32_t epoch) const;
  bool has_result(const Digest& job, const AgentKey& author, std::uint32_t epoch) const;

  // Own claims without own result or release, as (job, epoch).
  const std::set<std::pair<Digest, std::uint32_t>>& open() const { return open_; }
  bool is_open(const Digest& job, std::uint32_t epoch) const {
    return open_.count({job, epoch}) != 0;
  }

 private:
  struct Summary {
    const Statement* canonical = nullptr;
    int failed_attempts = 0;
    std::uint32_t max_epoch = 0;
  };
  const Summary& summary(const Digest& job) const;

  const Ledger& ledger_;
  AgentKey self_;
  mutable std::map<Digest, Summary> summaries_;
  std::map<Digest, std::uint32_t> retried_up_to_;  // job -> highest Retry epoch
  std::set<std::pair<Digest, std::uint32_t>> open_;
};

}  // namespace vow::promises
