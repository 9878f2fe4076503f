// Ledger: one agent's in-memory set of the statements it knows (its own and its
// peers'), with the indexes the coordination core needs: statements by (author, seq),
// the version vector, the latest advert per author, pipeline definitions, the latest
// source version per dataset, and claims/releases/results/accepts per job.
//
// Statements are immutable and idempotent: adding one twice is a no-op, so duplicates
// and reordering from the network are harmless. The first statement seen for an
// (author, seq) wins; a different one with the same name is reported as a conflict
// and dropped (only its author could have signed it: that author equivocated).
//
// Owns its statements; pointers returned stay valid for the ledger's lifetime
// (statements are never removed). Not thread-safe (owned by one Core).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "promises/statement.h"

namespace vow::promises {

// All statements about one job, in arrival order.
struct JobStatements {
  std::vector<const Statement*> claims;
  std::vector<const Statement*> releases;
  std::vector<const Statement*> results;
  std::vector<const Statement*> accepts;
};

class Ledger {
 public:
  enum class AddResult { kNew, kDuplicate, kConflict };

  Ledger() = default;
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Adds a statement (already verified by the caller). Returns what happened.
  AddResult add(const Statement& statement);

  const Statement* get(const AgentKey& author, std::uint64_t seq) const;
  bool contains(const AgentKey& author, std::uint64_t seq) const {
    return get(author, seq) != nullptr;
  }
  std::size_t size() const { return size_; }

  // Highest contiguous sequence held per author.
  VersionVector version_vector() const;
  // Sum of the version vector: a cheap summary peers compare in heartbeats.
  std::uint64_t vv_sum() const { return vv_sum_; }
  // Highest sequence held of `author` (contiguous or not); 0 if none.
  std::uint64_t max_seq(const AgentKey& author) const;

  // The statements a peer whose version vector is `theirs` lacks (every held seq above
  // its contiguous mark), authors in key order, oldest first, at most `limit` of them.
  // The peer asks again for the rest.
  std::vector<Statement> missing_for(const VersionVector& theirs, std::size_t limit) const;

  // Every statement, by author then seq (for status, tests and the simulator).
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& [author, by_seq] : by_author_) {
      for (const auto& [seq, st] : by_seq) f(st);
    }
  }

  // Indexes.
  const JobStatements* job(const Digest& job) const;
  const std::map<Digest, JobStatements>& jobs() const { return jobs_; }
  // Latest advert (highest seq) per author.
  const std::map<AgentKey, const Statement*>& adverts() const { return adverts_; }
  // Pipeline definitions by pipeline digest (first seen).
  const std::map<Digest, const Statement*>& pipelines() const { return pipelines_; }
  // Latest version per dataset (pipeline, source): highest version, then highest
  // author key, so every agent picks the same one from the same ledger.
  const Statement* source_version(const std::string& pipeline, const std::string& source) const;
  // The latest version of every dataset.
  const std::map<std::pair<std::string, std::string>, const Statement*>& sources() const {
    return sources_;
  }
  // Highest version this author published for the dataset (0 if none).
  std::uint64_t own_source_version(const AgentKey& author, const std::string& pipeline,
                                   const std::string& source) const;

 private:
  void index(const Statement* st);

  std::map<AgentKey, std::map<std::uint64_t, Statement>> by_author_;
  std::map<AgentKey, std::uint64_t> contiguous_;
  std::uint64_t vv_sum_ = 0;
  std::size_t size_ = 0;
  std::map<Digest, JobStatements> jobs_;
  std::map<AgentKey, const Statement*> adverts_;
  std::map<Digest, const Statement*> pipelines_;
  std::map<std::pair<std::string, std::string>, const Statement*> sources_;
  std::map<std::pair<AgentKey, std::pair<std::string, std::string>>, std::uint64_t> own_versions_;
};

}  // namespace vow::promises
