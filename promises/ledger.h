// Ledger: one agent's in-memory set of the statements it knows (its own and its
// peers'), with the indexes the coordination core needs: statements by (author, seq),
// the version vector and per-author prefix digests, adverts per author, pipeline
// definitions, source versions per dataset and provider, and
// claims/releases/results/accepts per job.
//
// Statements are immutable and idempotent: adding one twice is a no-op, so duplicates
// and reordering from the network are harmless. The first statement seen for an
// (author, seq) is the one indexed; a different one with the same name is proof that
// its author equivocated (only it could have signed both): the first such pair per
// author is kept as its proof (proofs()), the author is marked (equivocating()), and
// its statements stop counting for every canonical choice (docs/coordination.md
// section 8). Later conflicts of a marked author are counted, not kept.
//
// Source versions bind to providers (rule 2, docs/coordination.md section 4):
// source_version() is a pure function of the statements held, the same on every agent
// holding the same ones.
//
// Void adverts (rule 6, docs/coordination.md "Void adverts"): an advert followed at
// once by another advert of its author (seq + 1) was never in force for anything that
// author said, so its body is forgotten and its slot kept as void: it counts as held
// for the version vector, its prefix digest is void_digest(seq) on every agent, and
// peers learn of it from a VoidRange (add_void), which is only a hint: a real statement
// that is not void replaces it. A slot is void *proven* when this ledger saw the advert
// there while the next seq was a held advert or void (its body is then dropped, and
// take_voided() names it so the shell drops it on disk too), and *hinted* when only a
// peer's VoidRange says so: a hinted slot holds nothing and is not persisted, and only
// proven ones are passed on. Whether an arriving statement is kept or void is a
// function of what is held, so a wrong word heals: once the real statement above
// arrives, the advert below is kept again when a peer that holds it sends it (its
// prefix digest differs). A flood of adverts so
// leaves 32 bytes a seq, not the adverts. An equivocator's adverts become void like
// anyone's, so agents that learn of its equivocation at different times still hold the
// same slots.
//
// Owns its statements; pointers returned stay valid for the ledger's lifetime, except
// a superseded advert's (never the current one) once it becomes void. Not thread-safe
// (owned by one Core).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "promises/statement.h"

namespace vow::promises {

// All statements about one job, in arrival order (bound or not: ClaimBook judges).
struct JobStatements {
  std::vector<const Statement*> claims;
  std::vector<const Statement*> releases;
  std::vector<const Statement*> results;
  std::vector<const Statement*> accepts;
};

// Why a source version does not count (or that it does).
enum class SourceBinding : std::uint8_t {
  kCounted,      // in its provider's line, and the provider's current advert provides it
  kEquivocator,  // its author equivocated
  kNotProvided,  // its author's current advert does not provide the dataset
  kOutOfLine,    // not previous + 1 of its author's line (a jump, a repeat, backwards)
};
const char* source_binding_name(SourceBinding binding);

// Digest of one statement (of its signed bytes, or of its value if unsigned): what the
// prefix digests are made of.
Digest statement_digest(const Statement& st);

class Ledger {
 public:
  enum class AddResult {
    kNew,
    kDuplicate,
    kEquivocation,  // a second statement for a held (author, seq): kept as proof
    kConflict,      // another one by an author already proven to equivocate: not kept
    kVoid,          // an advert its author superseded at once (seq + 1): not kept
  };
  // At most this many seqs in one VoidRange a peer sends (add_void, voids_for).
  static constexpr std::uint64_t kMaxVoidRun = 4096;
  using Dataset = std::pair<std::string, std::string>;  // (pipeline, source)

  // The proof that an author equivocated: two different statements with one seq.
  struct Proof {
    Statement first;  // the one indexed (or, at a void slot, the one named first)
    Statement second;
  };

  Ledger() = default;
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Adds a statement (already verified by the caller; moved in where the caller has no
  // more use for it, as a restart's ledger read back). Returns what happened.
  AddResult add(const Statement& statement);
  AddResult add(Statement&& statement);

  const Statement* get(const AgentKey& author, std::uint64_t seq) const;
  // Gives a held statement its signature once its author's step signed it with the
  // others it published (Core, "sign_together"): the bytes stay as they were added.
  void set_signature(const AgentKey& author, std::uint64_t seq, const SignedForm& form);
  bool contains(const AgentKey& author, std::uint64_t seq) const {
    return get(author, seq) != nullptr;
  }
  std::size_t size() const { return size_; }  // indexed statements (proofs not counted)

  // Highest contiguous sequence held per author.
  VersionVector version_vector() const;
  // Sum of the version vector: a cheap summary peers compare in heartbeats.
  std::uint64_t vv_sum() const { return vv_sum_; }
  // Highest contiguous sequence held of `author`; 0 if none.
  std::uint64_t mark(const AgentKey& author) const {
    auto it = contiguous_.find(author);
    return it == contiguous_.end() ? 0 : it->second;
  }
  // Highest sequence held of `author` (contiguous or not); 0 if none.
  std::uint64_t max_seq(const AgentKey& author) const;

  // The statements a peer whose version vector is `theirs` lacks (every held seq above
  // its contiguous mark), at most `limit` of them: the authors take turns (one
  // statement each per round, in key order), each author's oldest first; a tail beyond
  // a gap this ledger shares goes newest first from a point `rotation` (any counter,
  // e.g. sync rounds) moves (retired and void slots are no gap); for a peer behind an
  // author's horizon floor, that author's horizon statements go first, except those of
  // horizons up to `their_horizon` (the last one the peer applied: it holds them), which
  // go last. The peer asks again for the rest.
  std::vector<Statement> missing_for(const VersionVector& theirs, std::size_t limit,
                                     std::uint64_t rotation = 0,
                                     std::uint64_t their_horizon = 0) const;

  // ---- void adverts ----
  bool is_void(const AgentKey& author, std::uint64_t seq) const {
    return is_proven_void(author, seq) || is_hinted_void(author, seq);
  }
  bool is_proven_void(const AgentKey& author, std::uint64_t seq) const;
  bool is_hinted_void(const AgentKey& author, std::uint64_t seq) const;
  // Held or void: nothing more to learn about (author, seq) but an equivocation.
  bool known(const AgentKey& author, std::uint64_t seq) const {
    return contains(author, seq) || is_void(author, seq) || is_retired(author, seq);
  }
  // Whether a peer's word that `range` is void can be taken: it spans 1..kMaxVoidRun
  // seqs from 1 up, its last + 1 is held here as an advert or is void, and its author
  // is not known to equivocate.
  bool void_acceptable(const VoidRange& range) const;
  // Takes it (if acceptable): each empty slot in it becomes a hinted void; held
  // statements stay (they are signed, the word is not). Returns the slots newly void.
  std::uint64_t add_void(const VoidRange& range);
  // The slots of `range` neither held nor void.
  std::uint64_t empty_slots(const VoidRange& range) const;
  // Restores proven void slots (persisted by the shell): trusted, no checks.
  void restore_void(const VoidRange& range);
  // The proven void seqs above each of the peer's marks, in ranges of at most
  // kMaxVoidRun, each author's highest first (so each is taken after the one above
  // it), at most `limit`.
  std::vector<VoidRange> voids_for(const VersionVector& theirs, std::size_t limit) const;
  // Every proven void range, by author then seq (merged).
  std::vector<VoidRange> void_ranges() const;
  std::uint64_t void_count() const { return void_count_; }
  // Of size() and void_count(), what one author's slots make up.
  std::size_t held_of(const AgentKey& author) const;
  std::uint64_t voids_of(const AgentKey& author) const;
  // The slots made void since the last call (their bodies are to be forgotten on disk).
  std::vector<StatementRef> take_voided();
  // The prefix-digest element of a void slot.
  static Digest void_digest(std::uint64_t seq);

  // ---- equivocation ----
  // Two different statements of one (author, seq) at a void slot, which holds neither:
  // kept as the author's proof (kEquivocation), unless it has one (kConflict) or they
  // are not a pair (kDuplicate).
  AddResult add_proof(const Statement& first, const Statement& second);
  bool equivocating(const AgentKey& author) const { return proofs_.count(author) != 0; }
  const std::map<AgentKey, Proof>& proofs() const { return proofs_; }
  // Both statements of every proof, authors in key order, at most `limit` statements.
  std::vector<Statement> proof_statements(std::size_t limit) const;
  // Conflicts seen from authors already marked (not kept).
  std::uint64_t conflicts_dropped() const { return conflicts_dropped_; }
  // Digest of `author`'s statements 1..seq as held here (seq <= its contiguous mark).
  std::optional<Digest> prefix_digest(const AgentKey& author, std::uint64_t seq) const;
  // The prefix digest at the contiguous mark of every author not known to equivocate.
  std::map<AgentKey, Digest> prefix_digests() const;
  // For a peer's (version vector, prefix digests): the statements here of each author
  // (not known to equivocate) whose prefix the peer holds differently: one window of
  // `per_author` consecutive seqs of 1..(the peer's mark), and `limit` in all. Where the
  // two prefixes part is unknown, so successive calls cover the prefix window by window
  // from the most recent down, as `rotation` (any counter, e.g. sync rounds) advances.
  std::vector<Statement> diverging_for(const VersionVector& theirs,
                                       const std::map<AgentKey, Digest>& digests,
                                       std::size_t per_author, std::size_t limit,
                                       std::uint64_t rotation = 0) const;
  // One digest of what this ledger holds: equal on two agents that hold the same
  // statements and know the same equivocators (for the simulator's invariants).
  Digest fingerprint() const;
  // The fingerprint and the last horizon applied, in one digest: what a summary-only
  // SyncRequest carries. Computed again only after the ledger changed (any call of
  // add, add_void, restore_void, add_proof or apply_horizon counts as a change).
  const Digest& summary() const;

  // ---- the horizon (docs/storage.md, "The ledger horizon") ----
  // Applies horizon proposal `h` (in force, the next of the chain): the held statements
  // it retires are dropped (take_retired() names them), the results it settles count as
  // settled, and each author's prefix digests restart at its cut. A retired slot this
  // ledger does not hold yet counts as held once reached (it is never asked for); a
  // statement arriving for a retired slot is a duplicate. Returns the jobs whose
  // statements changed.
  std::set<Digest> apply_horizon(const Horizon& h);
  std::uint64_t horizon_number() const { return horizon_number_; }
  // The last checkpoint applied (0: none), how many were, and how many of them were
  // applied without the horizon before them (a joiner, a restart, an agent back from away).
  std::uint64_t checkpoint_number() const { return checkpoint_number_; }
  std::uint64_t checkpoints_applied() const { return checkpoints_applied_; }
  std::uint64_t checkpoints_alone() const { return checkpoints_alone_; }
  const Digest& horizon_content() const { return horizon_content_; }
  // Seq up to which `author`'s statements are behind an applied horizon (0: none).
  std::uint64_t floor(const AgentKey& author) const;
  const std::map<AgentKey, std::uint64_t>& floors() const { return floor_; }
  // The sum of every author's floor: vv_sum() - floor_sum() statements are held (or
  // void) beyond the last horizon's cuts.
  std::uint64_t floor_sum() const { return floor_sum_; }
  // A result a horizon settled: a canonical candidate without its claim (ClaimBook).
  bool settled(const AgentKey& author, std::uint64_t seq) const {
    return settled_.count({author, seq}) != 0;
  }
  std::size_t settled_count() const { return settled_.size(); }
  // The digest a horizon applied here gave for the signed form of the settled statement
  // (author, seq) this ledger does not hold yet (HorizonRef::vouch); null if none. What
  // arrives there with that digest needs no signature check: the horizon's members
  // checked it. Forgotten once the slot is held or retired.
  const Digest* vouched(const AgentKey& author, std::uint64_t seq) const {
    if (vouched_.empty()) return nullptr;
    auto it = vouched_.find({author, seq});
    return it == vouched_.end() ? nullptr : &it->second;
  }
  std::size_t vouched_count() const { return vouched_.size(); }
  // Retired by a horizon: not held, not void, and at or below the author's contiguous
  // mark or in a retired range above it.
  bool is_retired(const AgentKey& author, std::uint64_t seq) const;
  // Statements dropped by apply_horizon since the last call (to be dropped on disk).
  std::vector<StatementRef> take_retired();
  std::uint64_t retired_count() const { return retired_count_; }
  // Jobs a horizon left without any statement here (superseded jobs retired whole).
  std::uint64_t jobs_emptied() const { return jobs_emptied_; }

  // Every statement, by author then seq (for status, tests and the simulator).
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& [author, by_seq] : by_author_) {
      for (const auto& [seq, st] : by_seq) f(st);
    }
  }

  // f(first, last) for each range of void slots of one author (proven or hinted).
  template <typename F>
  void for_each_void(const AgentKey& author, F&& f) const {
    for (const auto* m : {&voids_, &hints_}) {
      if (auto it = m->find(author); it != m->end()) {
        for (const auto& [first, last] : it->second) f(first, last);
      }
    }
  }

  // The statements of one author held at seqs first..last, by seq.
  template <typename F>
  void for_each_in(const AgentKey& author, std::uint64_t first, std::uint64_t last, F&& f) const {
    auto it = by_author_.find(author);
    if (it == by_author_.end()) return;
    for (auto s = it->second.lower_bound(first); s != it->second.end() && s->first <= last; ++s) {
      f(s->second);
    }
  }

  // Every statement of one author, by seq.
  template <typename F>
  void for_each_of(const AgentKey& author, F&& f) const {
    auto it = by_author_.find(author);
    if (it == by_author_.end()) return;
    for (const auto& [seq, st] : it->second) f(st);
  }

  // Indexes.
  const JobStatements* job(const Digest& job) const;
  const std::map<Digest, JobStatements>& jobs() const { return jobs_; }
  // The jobs a horizon may still have work on: each with a statement that is not a
  // settled result (a claim, release, accept, or a result not settled), or a settled
  // result of an author found equivocating since. May hold more (a job quiet since it
  // was added), never fewer; kept by add, add_proof and apply_horizon, so that a horizon
  // reads what changed since the last one, not every job held (promises/horizon.h).
  const std::set<Digest>& active_jobs() const { return active_jobs_; }
  // Latest advert (highest seq) per author.
  const std::map<AgentKey, const Statement*>& adverts() const { return adverts_; }
  // The advert of `author` in force when it published `seq`: its latest advert with a
  // lower seq (nullptr if none is held).
  const Statement* advert_at(const AgentKey& author, std::uint64_t seq) const;
  // Pipeline definitions by pipeline digest (first seen).
  const std::map<Digest, const Statement*>& pipelines() const { return pipelines_; }
  // Every pipeline definition statement held, in arrival order (several authors may
  // publish one digest).
  const std::vector<const Statement*>& pipeline_statements() const {
    return pipeline_statements_;
  }

  // ---- sources (rule 2) ----
  // The current version of a dataset: per provider (an author not equivocating whose
  // current advert provides the dataset), its latest counted version; among providers,
  // the artifact most of them currently give; on a tie, the one a provider got furthest
  // in its own line with, then the one given by the provider ranked first by
  // rendezvous_score(dataset, provider); that provider's statement.
  const Statement* source_version(const std::string& pipeline, const std::string& source) const;
  // The same as the statements at or below `cut` (per author, a seq) give it, with each
  // provider's advert in force there (a horizon's plan at its cut; not cached).
  const Statement* source_version_at(const std::string& pipeline, const std::string& source,
                                     const VersionVector& cut) const;
  // The current version of every dataset that has one.
  const std::map<Dataset, const Statement*>& sources() const;
  // Whether a source version statement held here counts.
  SourceBinding source_binding(const Statement& st) const;
  // The statement of this author with the highest version for the dataset (nullptr if
  // none), counted or not.
  const Statement* own_source(const AgentKey& author, const std::string& pipeline,
                              const std::string& source) const;
  // The author's counted line for a dataset: versions 1, 2, ... (from the line's base,
  // once a horizon retired the first ones) each published after the previous one
  // (lowest seq first), up to the first gap.
  // With a cut: only the statements at or below it.
  std::vector<const Statement*> line(const Dataset& dataset, const AgentKey& author,
                                     const VersionVector* cut = nullptr) const;
  // Every source version statement held of this author for the dataset (counted or
  // not), in arrival order; nullptr if none.
  const std::vector<const Statement*>* line_statements(const Dataset& dataset,
                                                       const AgentKey& author) const;
  // Where a horizon made the author's line of the dataset start (HorizonLineBase):
  // (version, seq); (1, 0) if none did.
  std::pair<std::uint64_t, std::uint64_t> line_base(const Dataset& dataset,
                                                    const AgentKey& author) const;
  // f(dataset, author) for every line of source version statements held.
  template <typename F>
  void for_each_source_line(F&& f) const {
    for (const auto& [dataset, by_author] : source_lines_) {
      for (const auto& [author, statements] : by_author) {
        if (!statements.empty()) f(dataset, author);
      }
    }
  }
  // The highest version a horizon made a line start at (1 if none did).
  std::uint64_t highest_line_base() const;
  // f(dataset, author, version, seq) for every line a horizon made start later.
  template <typename F>
  void for_each_line_base(F&& f) const {
    for (const auto& [dataset, by_author] : line_bases_) {
      for (const auto& [author, base] : by_author) f(dataset, author, base.first, base.second);
    }
  }
  // Highest version this author published for the dataset (0 if none).
  std::uint64_t own_source_version(const AgentKey& author, const std::string& pipeline,
                                   const std::string& source) const;

 private:
  void index(const Statement* st);
  void unindex(const Statement* st);
  AddResult add_held(const Statement& statement);
  template <typename S>
  AddResult add_any(S&& statement);
  AddResult keep_proof(const Statement& first, const Statement& second);
  void extend_prefix(const AgentKey& author, std::uint64_t from, std::uint64_t to);
  // Raises the author's contiguous mark over held and void slots.
  void advance(const AgentKey& author);
  // Recomputes the author's prefix digests from `seq` on (a slot there changed).
  void rebuild_prefix(const AgentKey& author, std::uint64_t seq);
  // Makes (author, seq) a proven void, then each held advert just below it too.
  void prove_void(const AgentKey& author, std::uint64_t seq);
  bool held_advert(const AgentKey& author, std::uint64_t seq) const;
  bool provides(const AgentKey& author, const Dataset& dataset,
                const VersionVector* cut = nullptr) const;
  const Statement* choose_source(const Dataset& dataset, const VersionVector* cut = nullptr) const;
  void refresh_sources() const;

  std::map<AgentKey, std::map<std::uint64_t, Statement>> by_author_;
  // Per author: the seqs of its horizon statements held (missing_for puts them first for
  // a peer behind the floor without walking the author's whole tail).
  std::map<AgentKey, std::set<std::uint64_t>> horizon_seqs_;
  // Per author: the digest of each statement held above its gap-free mark, as the
  // fingerprint read it (a joiner holds nearly everything above a gap, and hashing each
  // statement's signed form again on every summary cost a tenth of a catch-up). Dropped
  // with the statement.
  mutable std::map<AgentKey, std::map<std::uint64_t, Digest>> beyond_digests_;
  std::map<AgentKey, std::uint64_t> contiguous_;
  // Per author: the digests of its prefixes from `base` up (digest of 1..k is
  // d[k - base - 1]; of 1..base, base_digest). Below a horizon's cut they are not kept.
  // A chain that cannot be extended (a retired slot whose statement this ledger never
  // held) waits for the horizon's cut (pending_base_) to restart from.
  struct Chain {
    std::uint64_t base = 0;
    Digest base_digest;
    std::vector<Digest> d;
    std::uint64_t mark() const { return base + d.size(); }
  };
  std::map<AgentKey, Chain> prefix_;
  std::map<AgentKey, HorizonCut> pending_base_;
  std::map<AgentKey, std::uint64_t> floor_;
  std::uint64_t floor_sum_ = 0;
  // Looked up for each result of each job whose claims are bound (every job, when a
  // plan is made after a restart): hashed, not ordered.
  struct SlotHash {
    std::size_t operator()(const std::pair<AgentKey, std::uint64_t>& s) const noexcept {
      std::size_t h;
      __builtin_memcpy(&h, s.first.bytes.data(), sizeof(h));
      return h ^ (s.second * 0x9E3779B97F4A7C15ull);
    }
  };
  std::unordered_set<std::pair<AgentKey, std::uint64_t>, SlotHash> settled_;
  std::unordered_map<std::pair<AgentKey, std::uint64_t>, Digest, SlotHash> vouched_;
  std::uint64_t horizon_number_ = 0;
  Digest horizon_content_;
  std::uint64_t checkpoint_number_ = 0;
  std::uint64_t checkpoints_applied_ = 0;
  std::uint64_t checkpoints_alone_ = 0;
  std::vector<StatementRef> retired_;
  std::uint64_t retired_count_ = 0;
  std::uint64_t jobs_emptied_ = 0;
  using Ranges = std::map<std::uint64_t, std::uint64_t>;  // first -> last, disjoint
  std::map<AgentKey, Ranges> voids_;  // proven
  std::map<AgentKey, Ranges> hints_;  // hinted
  std::map<AgentKey, Ranges> pending_retired_;  // retired by a horizon, above the mark
  std::uint64_t void_count_ = 0;      // proven and hinted
  std::vector<StatementRef> voided_;
  std::uint64_t vv_sum_ = 0;
  std::size_t size_ = 0;
  std::uint64_t changes_ = 0;  // calls of the mutators above (summary()'s cache key)
  mutable std::uint64_t summary_changes_ = 0;
  mutable std::optional<Digest> summary_;
  std::map<AgentKey, Proof> proofs_;
  std::uint64_t conflicts_dropped_ = 0;
  std::map<Digest, JobStatements> jobs_;
  std::set<Digest> active_jobs_;
  std::map<AgentKey, const Statement*> adverts_;
  std::map<AgentKey, std::map<std::uint64_t, const Statement*>> advert_history_;
  std::map<Digest, const Statement*> pipelines_;
  std::vector<const Statement*> pipeline_statements_;
  // Source versions per dataset and author (every one, counted or not).
  std::map<Dataset, std::map<AgentKey, std::vector<const Statement*>>> source_lines_;
  std::map<std::pair<AgentKey, Dataset>, std::uint64_t> own_versions_;
  // Per dataset and author, the (version, seq) its line starts at (HorizonLineBase).
  std::map<Dataset, std::map<AgentKey, std::pair<std::uint64_t, std::uint64_t>>> line_bases_;
  // The current version per dataset, recomputed lazily for the datasets marked dirty.
  mutable std::map<Dataset, const Statement*> sources_;
  mutable std::set<Dataset> dirty_sources_;
};

}  // namespace vow::promises
