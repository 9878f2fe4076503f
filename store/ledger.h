// LedgerStore: an agent's durable state (docs/storage.md): every statement it knows, its
// own sequence counter, the jobs it is running, its peers, and the index of artifacts it
// holds. SqliteLedger (sqlite_ledger.h) keeps it in STATE_DIR/vow.db; MemoryLedger is
// the same contract in memory for tests; FaultyLedger wraps either and fails chosen
// writes.
//
// The ledger never decodes statement bytes (that is transport's codec): the caller
// passes the exact signed bytes plus the few fields queries need, decoded once by the
// caller. Statements are immutable: (author, seq) names one statement forever.
//   - Inserting a statement that is already stored with identical bytes is a no-op.
//   - Inserting one whose (author, seq) is stored with different bytes is equivocation
//     by the author: kInvalid, and nothing changes.
//   - A batch is one transaction: all of it is stored, or (on any error) none of it.
//   - append_own() stores one of this agent's own statements and advances the own
//     sequence counter in the same transaction; the caller assigns seq, the ledger checks
//     it is exactly own_last_seq() + 1.
//   - write_together() makes every write of a function one transaction: one commit and,
//     in SqliteLedger, one sync for all of them (group commit, docs/storage.md).
//   - Running-job rows are durable across a crash of the process, not necessarily across
//     a power loss (which ends every job too): SqliteLedger commits them without a sync,
//     and the next synced commit makes them durable with it.
//
// Errors: kInvalid (bad argument / equivocation), kCorrupt (a stored row fails its
// checksum; the message names author and seq), kIo / kUnavailable (the database failed;
// the message names the file, the operation and SQLite's error text).
//
// Thread-safety: none. One thread owns a LedgerStore (the agent's event loop); SQLite is the
// single writer of vow.db. Ownership: the caller owns the LedgerStore (unique_ptr).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "promises/digest.h"
#include "promises/statement.h"
#include "promises/status.h"

namespace vow::store {

// A statement as stored: the signed bytes and the columns queries use.
struct StoredStatement {
  AgentKey author;
  std::uint64_t seq = 0;  // >= 1
  StatementKind kind = StatementKind::kAdvert;
  std::optional<Digest> job;  // claims, releases, results, accepts, checkpoints
  std::uint32_t epoch = 0;
  std::optional<Digest> outputs_digest;  // results: promises' outputs_digest()
  std::optional<bool> ok;                // results: did the job succeed
  std::string bytes;                     // exactly the signed bytes
  std::array<std::uint8_t, 64> signature{};
  std::string path;  // its place in the batch its author signed (SignedForm::path); empty: alone
  // When this agent stored it (wall clock, supplied by the caller; for humans only).
  // Not part of the statement's identity: ignored when comparing a duplicate.
  std::int64_t received_unix_ms = 0;
  bool operator==(const StoredStatement&) const = default;
};

// A job this agent has started and not yet finished (restart recovery, docs/storage.md).
struct RunningJob {
  Digest job;
  std::uint32_t epoch = 0;
  std::int64_t pid = 0;
  std::string work_dir;
  std::int64_t started_unix_ms = 0;
  bool operator==(const RunningJob&) const = default;
};

struct PeerRecord {
  AgentKey id;
  std::vector<std::string> endpoints;  // each non-empty, without newlines
  std::int64_t last_seen_unix_ms = 0;
  bool operator==(const PeerRecord&) const = default;
};

enum class ArtifactKind : std::uint8_t { kFile = 0, kTree = 1 };
const char* artifact_kind_name(ArtifactKind kind);

// One row of the artifact index. size_bytes is the stored object's size (for a tree,
// the length of its encoding: children are objects of their own). last_used is a
// logical use tick (larger = used more recently), not a time.
struct ArtifactRecord {
  Digest digest;
  std::uint64_t size_bytes = 0;
  ArtifactKind kind = ArtifactKind::kFile;
  bool pinned = false;
  std::uint64_t last_used = 0;
  bool operator==(const ArtifactRecord&) const = default;
};

// Bounds on query results (a sync reply, a listing), so no query loads a whole ledger.
inline constexpr std::size_t kMaxQueryRows = 100'000;

class LedgerStore {
 public:
  virtual ~LedgerStore() = default;

  // --- group commit ---
  // Runs FN; the writes it makes through this ledger form one transaction. When this
  // returns ok they are all durable, and MOVED (if given) holds the new contiguous seq
  // (as version_vector() gives it) of at least every author whose frontier they moved.
  // A write inside FN that fails is undone alone, as outside; when FN returns an error or
  // the commit fails, SqliteLedger keeps none of FN's writes (the in-memory ledger keeps
  // those that succeeded); after an error that cost SQLite the whole transaction (some
  // I/O errors), every later write inside FN fails too, and so does the commit. A call
  // inside FN only runs its function, as part of the outer.
  virtual Status write_together(const std::function<Status()>& fn, VersionVector* moved);
  // As write_together, for a caller that gives the whole group up at its first failed
  // write (the agent's pass: any failure stops it): a write that fails undoes the group,
  // which then commits nothing even if FN goes on and returns ok. Writes inside it carry
  // no savepoint of their own (two statements fewer a write, in SqliteLedger).
  virtual Status write_all_or_nothing(const std::function<Status()>& fn, VersionVector* moved) {
    return write_together(fn, moved);
  }
  // Copies what the write-ahead log holds back into the database as far as readers
  // allow, without waiting for any writer or reader (SQLite's PASSIVE checkpoint). For a
  // connection that is not the one that commits the ledger. With `truncate`, it then
  // waits for the writer (up to the busy timeout) to copy the rest and empties the log
  // (TRUNCATE): a log that is written all the time is never emptied otherwise. No-op
  // where there is no log.
  virtual Status checkpoint(bool truncate = false) {
    (void)truncate;
    return Status::ok();
  }

  // --- statements ---
  virtual Status insert(const StoredStatement& s) = 0;
  virtual Status insert_batch(std::span<const StoredStatement> batch) = 0;
  // Own statements: seq must be own_last_seq() + 1.
  virtual Status append_own(const StoredStatement& s) = 0;
  virtual Result<std::uint64_t> own_last_seq() = 0;  // 0 before the first
  Result<std::uint64_t> own_next_seq() {
    auto last = own_last_seq();
    if (!last.is_ok()) return last.status();
    return *last + 1;
  }
  virtual Result<std::optional<StoredStatement>> get(const AgentKey& author, std::uint64_t seq) = 0;
  // Statements of AUTHOR with seq > after_seq, by seq, at most `limit` (<= kMaxQueryRows).
  virtual Result<std::vector<StoredStatement>> by_author_after(const AgentKey& author,
                                                               std::uint64_t after_seq,
                                                               std::size_t limit) = 0;
  // Per author, the highest seq N such that 1..N are all stored. Authors whose seq 1 is
  // missing are absent.
  virtual Result<VersionVector> version_vector() = 0;
  // Visits every statement (restart, fsck, verify). row_status is kCorrupt for a row
  // that fails its checksum (the statement still carries author and seq). FN may take
  // the row's contents (it is a copy, made for the visit). Stops at the first non-ok
  // status returned by FN and returns it.
  virtual Status scan_statements(
      const std::function<Status(StoredStatement& s, const Status& row_status)>& fn) = 0;
  virtual Result<std::uint64_t> statement_count() = 0;

  // --- equivocation proofs (docs/coordination.md, rule 5) ---
  // The second statement of an (author, seq) whose first is stored: the proof that the
  // author signed two. One per author; a later one for the same author is ignored.
  virtual Status put_proof(const StoredStatement& second) = 0;
  // Every proof stored, by author (author, seq, bytes and signature set).
  virtual Result<std::vector<StoredStatement>> proofs() = 0;

  // --- void slots (docs/coordination.md, "Void adverts") ---
  // Slots that became void, in one transaction: the advert row at each, if any, is
  // deleted (a row of another kind is kept), and the slot is recorded, merged into
  // ranges. Void slots count as stored in version_vector().
  virtual Status put_voids(std::span<const StatementRef> slots) = 0;
  // Every void range, by author then first seq.
  virtual Result<std::vector<VoidRange>> voids() = 0;

  // --- the horizon (docs/storage.md, "The ledger horizon") ---
  // Statements a horizon retired, in one transaction: their rows are deleted (absent
  // ones are ignored). Frontiers do not move back.
  virtual Status forget(std::span<const StatementRef> retired) = 0;

  // --- running jobs ---
  virtual Status put_running_job(const RunningJob& job) = 0;  // replaces the same job
  virtual Status remove_running_job(const Digest& job) = 0;   // ok if absent
  virtual Result<std::vector<RunningJob>> running_jobs() = 0;

  // --- peers ---
  virtual Status put_peer(const PeerRecord& peer) = 0;  // replaces the same id
  virtual Status remove_peer(const AgentKey& id) = 0;
  virtual Result<std::vector<PeerRecord>> peers() = 0;

  // --- artifact index ---
  // Adds rows; an existing row keeps its pinned flag and gets the larger last_used.
  virtual Status index_put(std::span<const ArtifactRecord> records) = 0;
  virtual Status index_remove(const Digest& digest) = 0;  // ok if absent
  virtual Result<std::optional<ArtifactRecord>> index_get(const Digest& digest) = 0;
  virtual Result<std::vector<ArtifactRecord>> index_list() = 0;
  // Every indexed digest, in no particular order (a restart's: nothing sorted).
  virtual Result<std::vector<Digest>> index_digests() {
    auto rows = index_list();
    if (!rows.is_ok()) return rows.status();
    std::vector<Digest> out;
    out.reserve(rows->size());
    for (const auto& r : *rows) out.push_back(r.digest);
    return out;
  }
  // The bytes of every indexed object, summed (no row is read out, nothing sorted).
  virtual Result<std::uint64_t> index_bytes() {
    auto rows = index_list();
    if (!rows.is_ok()) return rows.status();
    std::uint64_t total = 0;
    for (const auto& r : *rows) total += r.size_bytes;
    return total;
  }
  virtual Status index_set_pinned(const Digest& digest, bool pinned) = 0;  // kNotFound
  // Raises last_used to each tick (one transaction); rows that are gone are skipped.
  virtual Status index_touch(std::span<const std::pair<Digest, std::uint64_t>> ticks) = 0;
  virtual Result<std::uint64_t> index_max_tick() = 0;
};

// The in-memory ledger: same contract, nothing persisted.
std::unique_ptr<LedgerStore> make_memory_ledger();

// Which ledger writes a FaultyLedger fails. A "write" is any mutating call.
struct LedgerFaultPlan {
  std::uint64_t fail_write_n = 0;  // fail the Nth write (1-based); 0 = never
  bool disk_full = false;          // every write fails with kUnavailable "disk full"
};

// Wraps a ledger (not owned; must outlive the wrapper) and fails the planned writes
// before they reach it, so a failed write changes nothing.
class FaultyLedger final : public LedgerStore {
 public:
  explicit FaultyLedger(LedgerStore& base) : base_(base) {}
  LedgerFaultPlan& plan() { return plan_; }

  Status insert(const StoredStatement& s) override;
  Status insert_batch(std::span<const StoredStatement> batch) override;
  Status append_own(const StoredStatement& s) override;
  // FN's writes still pass through this wrapper (and its plan) one by one.
  Status write_together(const std::function<Status()>& fn, VersionVector* moved) override {
    return base_.write_together(fn, moved);
  }
  Status write_all_or_nothing(const std::function<Status()>& fn, VersionVector* moved) override {
    return base_.write_all_or_nothing(fn, moved);
  }
  Result<std::uint64_t> own_last_seq() override { return base_.own_last_seq(); }
  Result<std::optional<StoredStatement>> get(const AgentKey& a, std::uint64_t seq) override {
    return base_.get(a, seq);
  }
  Result<std::vector<StoredStatement>> by_author_after(const AgentKey& a, std::uint64_t after,
                                                       std::size_t limit) override {
    return base_.by_author_after(a, after, limit);
  }
  Result<VersionVector> version_vector() override { return base_.version_vector(); }
  Status scan_statements(
      const std::function<Status(StoredStatement&, const Status&)>& fn) override {
    return base_.scan_statements(fn);
  }
  Result<std::uint64_t> statement_count() override { return base_.statement_count(); }
  Status put_proof(const StoredStatement& second) override { return base_.put_proof(second); }
  Result<std::vector<StoredStatement>> proofs() override { return base_.proofs(); }
  Status put_voids(std::span<const StatementRef> slots) override;
  Result<std::vector<VoidRange>> voids() override { return base_.voids(); }
  Status forget(std::span<const StatementRef> retired) override;
  Status put_running_job(const RunningJob& job) override;
  Status remove_running_job(const Digest& job) override;
  Result<std::vector<RunningJob>> running_jobs() override { return base_.running_jobs(); }
  Status put_peer(const PeerRecord& peer) override;
  Status remove_peer(const AgentKey& id) override;
  Result<std::vector<PeerRecord>> peers() override { return base_.peers(); }
  Status index_put(std::span<const ArtifactRecord> records) override;
  Status index_remove(const Digest& digest) override;
  Result<std::optional<ArtifactRecord>> index_get(const Digest& d) override {
    return base_.index_get(d);
  }
  Result<std::vector<ArtifactRecord>> index_list() override { return base_.index_list(); }
  Result<std::vector<Digest>> index_digests() override { return base_.index_digests(); }
  Result<std::uint64_t> index_bytes() override { return base_.index_bytes(); }
  Status index_set_pinned(const Digest& digest, bool pinned) override;
  Status index_touch(std::span<const std::pair<Digest, std::uint64_t>> ticks) override;
  Result<std::uint64_t> index_max_tick() override { return base_.index_max_tick(); }

 private:
  Status before_write(const char* op);

  LedgerStore& base_;
  LedgerFaultPlan plan_;
  std::uint64_t writes_ = 0;
};

}  // namespace vow::store
