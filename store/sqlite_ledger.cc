#include "store/sqlite_ledger.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <set>

#include "promises/assert.h"
#include "store/sqlite_schema.h"
#include "store/statement_check.h"

namespace vow::store {
namespace {

// SQLite's own busy handler sleeps 1, 2, 5, 10, ... ms. An agent's two connections (the
// loop's and the worker's) wait on each other's commits, each held for one sync of the
// WAL (0.1-1 ms on a disk): a first wait of a whole millisecond for a lock held a
// fraction of that is latency on a hand-off (a fetched input's index row behind the
// loop's commit of the claim). This one sleeps 25 us, doubling to 1 ms at most, until
// the timeout (CTX, in milliseconds) has been slept.
int short_busy_wait(void* ctx, int count) {
  const auto timeout_us = static_cast<std::int64_t>(reinterpret_cast<std::intptr_t>(ctx)) * 1000;
  // Slept so far: 25 + 50 + ... + 800 us over the first six waits, 1 ms each after.
  const int doubling = std::min(count, 6);
  const std::int64_t slept = 25 * ((std::int64_t{1} << doubling) - 1) +
                             std::int64_t{1000} * std::max(count - 6, 0);
  if (slept >= timeout_us) return 0;
  ::usleep(static_cast<useconds_t>(count < 6 ? 25 << count : 1000));
  return 1;
}

constexpr const char* kStatementColumns =
    "author, seq, kind, job, epoch, outputs_digest, ok, bytes, signature, received_at, "
    "row_check, path";

template <typename T>
std::span<const std::uint8_t> as_span(const T& bytes) {
  return {bytes.data(), bytes.size()};
}

// A statement's place in its batch: NULL when it was signed alone (SignedForm::path).
void bind_path(sqlite3_stmt* st, int column, const std::string& path) {
  if (!path.empty()) {
    sqlite3_bind_blob(st, column, path.data(), static_cast<int>(path.size()), SQLITE_STATIC);
  }
}
void read_path(sqlite3_stmt* st, int column, std::string& path) {
  const auto* p = static_cast<const char*>(sqlite3_column_blob(st, column));
  path.assign(p == nullptr ? "" : p, static_cast<std::size_t>(sqlite3_column_bytes(st, column)));
}

// Resets a cached statement when it goes out of scope.
class StmtGuard {
 public:
  explicit StmtGuard(sqlite3_stmt* s) : s_(s) {}
  ~StmtGuard() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  StmtGuard(const StmtGuard&) = delete;
  StmtGuard& operator=(const StmtGuard&) = delete;
  sqlite3_stmt* get() const { return s_; }

 private:
  sqlite3_stmt* s_;
};

class SqliteLedger final : public LedgerStore {
 public:
  SqliteLedger(sqlite3* db, std::string path, bool synchronous_full)
      : db_(db), path_(std::move(path)), synchronous_full_(synchronous_full) {}
  ~SqliteLedger() override {
    for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }
  SqliteLedger(const SqliteLedger&) = delete;
  SqliteLedger& operator=(const SqliteLedger&) = delete;

  Status exec(const char* sql, const char* op) {
    int rc = control(sql);
    if (rc != SQLITE_OK) return err(op, rc);
    return Status::ok();
  }

  // Runs one statement of no result (BEGIN, COMMIT, SAVEPOINT, a pragma) through the
  // cache of prepared statements: sqlite3_exec would parse it again on every write, and
  // a group commit opens and releases a savepoint for each of its writes.
  int control(const char* sql) {
    auto stmt = prepare(sql);
    if (!stmt.is_ok()) return SQLITE_ERROR;
    int rc = sqlite3_step(*stmt);
    sqlite3_reset(*stmt);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
  }

  Status err(const std::string& op, int rc) { return sqlite_status(db_, path_, op, rc); }

  // Runs FN in a write transaction (BEGIN IMMEDIATE ... COMMIT), rolling back on error.
  // Inside write_together, FN runs in a savepoint of the group's transaction instead, so
  // that a write that fails is undone alone, as it would be on its own.
  template <typename Fn>
  Status transaction(const char* op, Fn&& fn) {
    if (grouped_ && whole_) {
      // write_all_or_nothing: no savepoint; a failure dooms the group.
      if (!group_failed_.is_ok()) return group_failed_;
      VOW_RETURN_IF_ERROR(group_open(op));
      Status s = fn();
      if (!s.is_ok()) group_failed_ = s;
      return s;
    }
    if (grouped_) {
      VOW_RETURN_IF_ERROR(group_open(op));
      VOW_RETURN_IF_ERROR(exec("SAVEPOINT one_write", (std::string(op) + ": savepoint").c_str()));
      VersionVector moves_before = moves_;
      Status s = fn();
      if (s.is_ok()) {
        int rc = control("RELEASE one_write");
        if (rc == SQLITE_OK) return Status::ok();
        s = err(std::string(op) + ": release", rc);
      }
      moves_ = std::move(moves_before);
      // After some I/O errors SQLite has rolled the whole group back; its commit then fails.
      if (!sqlite3_get_autocommit(db_)) {
        control("ROLLBACK TO one_write");
        control("RELEASE one_write");
      }
      return s;
    }
    VOW_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", (std::string(op) + ": begin").c_str()));
    Status s = fn();
    if (s.is_ok()) {
      int rc = control("COMMIT");
      if (rc == SQLITE_OK) return Status::ok();
      s = err(std::string(op) + ": commit", rc);
    }
    // After some I/O errors SQLite has already rolled back; then this fails harmlessly.
    if (!sqlite3_get_autocommit(db_)) control("ROLLBACK");
    return s;
  }

  Result<sqlite3_stmt*> prepare(const char* sql) {
    auto it = cache_.find(sql);
    if (it != cache_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) return err(std::string("prepare ") + sql, rc);
    cache_.emplace(sql, stmt);
    return stmt;
  }

  Status step_done(sqlite3_stmt* s, const char* op) {
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) return err(op, rc);
    return Status::ok();
  }

  // --- group commit ---

  Status write_together(const std::function<Status()>& fn, VersionVector* moved) override {
    return group(fn, moved, false);
  }

  Status write_all_or_nothing(const std::function<Status()>& fn, VersionVector* moved) override {
    return group(fn, moved, true);
  }

  Status group(const std::function<Status()>& fn, VersionVector* moved, bool whole) {
    if (grouped_) return fn();
    VOW_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "write together: begin"));
    grouped_ = true;
    whole_ = whole;
    group_failed_ = Status::ok();
    moves_.clear();
    Status s = fn();
    grouped_ = false;
    whole_ = false;
    if (s.is_ok()) s = group_failed_;
    group_failed_ = Status::ok();
    if (s.is_ok()) s = group_open("write together");
    if (s.is_ok()) {
      int rc = control("COMMIT");
      if (rc == SQLITE_OK) {
        if (moved != nullptr) *moved = std::move(moves_);
        moves_.clear();
        return Status::ok();
      }
      s = err("write together: commit", rc);
    }
    if (!sqlite3_get_autocommit(db_)) control("ROLLBACK");
    moves_.clear();
    return s;
  }

  // After some I/O errors SQLite rolls back the whole transaction: the group is lost,
  // and no later write may start a transaction of its own and commit half a group.
  Status group_open(const char* op) {
    if (!sqlite3_get_autocommit(db_)) return Status::ok();
    return Status::io(path_ + ": " + op + ": the group's transaction was rolled back by an " +
                      "earlier error");
  }

  // Runs FN, one write committed on its own, without syncing the WAL: durable across a
  // crash of the process at once, across a power loss with the next synced commit. For
  // the running-job table only (ledger.h). Inside write_together it is part of the group.
  template <typename Fn>
  Status unsynced(const char* op, Fn&& fn) {
    if (grouped_ && whole_) return transaction(op, fn);
    if (grouped_) VOW_RETURN_IF_ERROR(group_open(op));
    if (grouped_ || !synchronous_full_) return fn();
    VOW_RETURN_IF_ERROR(exec("PRAGMA synchronous=NORMAL", op));
    Status s = fn();
    Status back = exec("PRAGMA synchronous=FULL", op);
    return s.is_ok() ? back : s;
  }

  // --- statements ---

  Status insert(const StoredStatement& s) override {
    return transaction("insert statement", [&] {
      std::set<AgentKey> touched;
      VOW_RETURN_IF_ERROR(insert_locked(s, touched));
      return advance_frontiers(touched);
    });
  }

  Status insert_batch(std::span<const StoredStatement> batch) override {
    return transaction("insert statement batch", [&] {
      std::set<AgentKey> touched;
      for (const auto& s : batch) VOW_RETURN_IF_ERROR(insert_locked(s, touched));
      return advance_frontiers(touched);
    });
  }

  Status append_own(const StoredStatement& s) override {
    return transaction("append own statement", [&]() -> Status {
      auto last = own_last_seq();
      if (!last.is_ok()) return last.status();
      if (s.seq != *last + 1) {
        return Status::invalid("own statement seq " + std::to_string(s.seq) +
                               " is not the next own seq " + std::to_string(*last + 1));
      }
      std::set<AgentKey> touched;
      VOW_RETURN_IF_ERROR(insert_locked(s, touched));
      VOW_RETURN_IF_ERROR(advance_frontiers(touched));
      auto st = prepare("UPDATE own_seq SET last_seq = ?1 WHERE id = 0");
      if (!st.is_ok()) return st.status();
      StmtGuard g(*st);
      sqlite3_bind_int64(*st, 1, static_cast<sqlite3_int64>(s.seq));
      return step_done(*st, "update own_seq");
    });
  }

  Result<std::uint64_t> own_last_seq() override {
    auto st = prepare("SELECT last_seq FROM own_seq WHERE id = 0");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    int rc = sqlite3_step(*st);
    if (rc != SQLITE_ROW) return err("read own_seq", rc);
    return static_cast<std::uint64_t>(sqlite3_column_int64(*st, 0));
  }

  Result<std::optional<StoredStatement>> get(const AgentKey& author, std::uint64_t seq) override {
    static const std::string sql =
        std::string("SELECT ") + kStatementColumns + " FROM statements WHERE author=?1 AND seq=?2";
    auto st = prepare(sql.c_str());
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    bind_blob(*st, 1, as_span(author.bytes));
    sqlite3_bind_int64(*st, 2, static_cast<sqlite3_int64>(seq));
    auto rows = collect(*st, 1, "select statement");
    if (!rows.is_ok()) return rows.status();
    if (rows->empty()) return std::optional<StoredStatement>();
    return std::optional<StoredStatement>(std::move(rows->front()));
  }

  Result<std::vector<StoredStatement>> by_author_after(const AgentKey& author,
                                                       std::uint64_t after_seq,
                                                       std::size_t limit) override {
    static const std::string sql = std::string("SELECT ") + kStatementColumns +
                                   " FROM statements WHERE author=?1 AND seq>?2 ORDER BY seq "
                                   "LIMIT ?3";
    auto st = prepare(sql.c_str());
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    bind_blob(*st, 1, as_span(author.bytes));
    sqlite3_bind_int64(*st, 2, static_cast<sqlite3_int64>(after_seq));
    limit = std::min(limit, kMaxQueryRows);
    sqlite3_bind_int64(*st, 3, static_cast<sqlite3_int64>(limit));
    return collect(*st, limit, "select statements by author");
  }

  Result<VersionVector> version_vector() override {
    auto st = prepare("SELECT author, contiguous FROM frontier WHERE contiguous > 0");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    VersionVector vv;
    int rc;
    while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
      AgentKey key;
      if (!read_fixed(*st, 0, key.bytes)) return Status::corrupt(path_ + ": frontier: bad author");
      vv[key] = static_cast<std::uint64_t>(sqlite3_column_int64(*st, 1));
    }
    if (rc != SQLITE_DONE) return err("select frontier", rc);
    return vv;
  }

  Status scan_statements(
      const std::function<Status(StoredStatement&, const Status&)>& fn) override {
    // Not cached: a scan may run while FN issues other queries on this connection.
    std::string sql =
        // In row order, not (author, seq): through the key's index every row is a lookup
        // in the table, two and a half times slower at 100,000 statements.
        std::string("SELECT ") + kStatementColumns + " FROM statements";
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr);
    if (rc != SQLITE_OK) return err("prepare scan", rc);
    Status result;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      StoredStatement s;
      Status row = read_row(st, s);
      result = fn(s, row);
      if (!result.is_ok()) break;
    }
    if (result.is_ok() && rc != SQLITE_DONE) result = err("scan statements", rc);
    sqlite3_finalize(st);
    return result;
  }

  Result<std::uint64_t> statement_count() override {
    auto st = prepare("SELECT COUNT(*) FROM statements");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    int rc = sqlite3_step(*st);
    if (rc != SQLITE_ROW) return err("count statements", rc);
    return static_cast<std::uint64_t>(sqlite3_column_int64(*st, 0));
  }

  // --- running jobs ---

  Status checkpoint(bool truncate) override {
    int rc = sqlite3_wal_checkpoint_v2(
        db_, "main", truncate ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE, nullptr,
        nullptr);
    if (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) return Status::ok();
    return sqlite_status(db_, path_, "checkpoint", rc);
  }

  Status put_running_job(const RunningJob& job) override {
    return unsynced("insert running_jobs", [&] { return put_running_job_row(job); });
  }

  Status remove_running_job(const Digest& job) override {
    return unsynced("delete running_jobs", [&] { return remove_running_job_row(job); });
  }

  Status put_running_job_row(const RunningJob& job) {
    auto st = prepare(
        "INSERT OR REPLACE INTO running_jobs (job, epoch, pid, work_dir, started_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    bind_blob(*st, 1, as_span(job.job.bytes));
    sqlite3_bind_int64(*st, 2, job.epoch);
    sqlite3_bind_int64(*st, 3, job.pid);
    sqlite3_bind_text(*st, 4, job.work_dir.data(), static_cast<int>(job.work_dir.size()),
                      SQLITE_STATIC);
    sqlite3_bind_int64(*st, 5, job.started_unix_ms);
    return step_done(*st, "insert running_jobs");
  }

  Status remove_running_job_row(const Digest& job) {
    auto st = prepare("DELETE FROM running_jobs WHERE job = ?1");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    bind_blob(*st, 1, as_span(job.bytes));
    return step_done(*st, "delete running_jobs");
  }

  Result<std::vector<RunningJob>> running_jobs() override {
    auto st = prepare(
        "SELECT job, epoch, pid, work_dir, started_at FROM running_jobs ORDER BY started_at, "
        "job");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    std::vector<RunningJob> out;
    int rc;
    while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
      RunningJob j;
      if (!read_fixed(*st, 0, j.job.bytes))
        return Status::corrupt(path_ + ": running_jobs: bad job");
      j.epoch = static_cast<std::uint32_t>(sqlite3_column_int64(*st, 1));
      j.pid = sqlite3_column_int64(*st, 2);
      j.work_dir = column_text(*st, 3);
      j.started_unix_ms = sqlite3_column_int64(*st, 4);
      out.push_back(std::move(j));
    }
    if (rc != SQLITE_DONE) return err("select running_jobs", rc);
    return out;
  }

  // --- peers ---

  Status put_peer(const PeerRecord& peer) override {
    std::string endpoints;
    for (const auto& e : peer.endpoints) {
      if (e.empty() || e.find('\n') != std::string::npos) {
        return Status::invalid("peer endpoint empty or with a newline: '" + e + "'");
      }
      if (!endpoints.empty()) endpoints.push_back('\n');
      endpoints += e;
    }
    auto st =
        prepare("INSERT OR REPLACE INTO peers (id, endpoints, last_seen) VALUES (?1, ?2, ?3)");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    bind_blob(*st, 1, as_span(peer.id.bytes));
    sqlite3_bind_text(*st, 2, endpoints.data(), static_cast<int>(endpoints.size()), SQLITE_STATIC);
    sqlite3_bind_int64(*st, 3, peer.last_seen_unix_ms);
    return step_done(*st, "insert peers");
  }

  Status remove_peer(const AgentKey& id) override {
    auto st = prepare("DELETE FROM peers WHERE id = ?1");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    bind_blob(*st, 1, as_span(id.bytes));
    return step_done(*st, "delete peers");
  }

  Status put_proof(const StoredStatement& s) override {
    if (grouped_) VOW_RETURN_IF_ERROR(group_open("insert proof"));
    auto st = prepare(
        "INSERT OR IGNORE INTO proofs (author, seq, bytes, signature, path) "
        "VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    bind_blob(*st, 1, as_span(s.author.bytes));
    sqlite3_bind_int64(*st, 2, static_cast<sqlite3_int64>(s.seq));
    sqlite3_bind_blob(*st, 3, s.bytes.data(), static_cast<int>(s.bytes.size()), SQLITE_STATIC);
    bind_blob(*st, 4, as_span(s.signature));
    bind_path(*st, 5, s.path);
    int rc = sqlite3_step(*st);
    if (rc != SQLITE_DONE) return err("insert proof", rc);
    return Status::ok();
  }

  Result<std::vector<StoredStatement>> proofs() override {
    auto st = prepare("SELECT author, seq, bytes, signature, path FROM proofs ORDER BY author");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    std::vector<StoredStatement> out;
    int rc;
    while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
      StoredStatement s;
      if (!read_fixed(*st, 0, s.author.bytes) || !read_fixed(*st, 3, s.signature)) {
        return Status::corrupt(path_ + ": proofs: bad author or signature column");
      }
      s.seq = static_cast<std::uint64_t>(sqlite3_column_int64(*st, 1));
      const auto* b = static_cast<const char*>(sqlite3_column_blob(*st, 2));
      s.bytes.assign(b == nullptr ? "" : b, static_cast<std::size_t>(sqlite3_column_bytes(*st, 2)));
      read_path(*st, 4, s.path);
      out.push_back(std::move(s));
    }
    if (rc != SQLITE_DONE) return err("select proofs", rc);
    return out;
  }

  Status put_voids(std::span<const StatementRef> slots) override {
    return transaction("put voids", [&]() -> Status {
      std::set<AgentKey> touched;
      for (const auto& r : slots) {
        VOW_RETURN_IF_ERROR(put_void_locked(r));
        touched.insert(r.author);
      }
      return advance_frontiers(touched);
    });
  }

  Status forget(std::span<const StatementRef> retired) override {
    return transaction("forget retired", [&]() -> Status {
      auto del = prepare("DELETE FROM statements WHERE author = ?1 AND seq = ?2");
      if (!del.is_ok()) return del.status();
      StmtGuard g(*del);
      for (const auto& r : retired) {
        sqlite3_reset(*del);
        bind_blob(*del, 1, as_span(r.author.bytes));
        sqlite3_bind_int64(*del, 2, static_cast<sqlite3_int64>(r.seq));
        VOW_RETURN_IF_ERROR(step_done(*del, "delete retired statement"));
      }
      return Status::ok();
    });
  }

  Result<std::vector<VoidRange>> voids() override {
    auto st = prepare("SELECT author, first, last FROM voids ORDER BY author, first");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    std::vector<VoidRange> out;
    int rc;
    while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
      VoidRange v;
      if (!read_fixed(*st, 0, v.author.bytes)) return Status::corrupt(path_ + ": voids: bad author");
      v.first = static_cast<std::uint64_t>(sqlite3_column_int64(*st, 1));
      v.last = static_cast<std::uint64_t>(sqlite3_column_int64(*st, 2));
      out.push_back(v);
    }
    if (rc != SQLITE_DONE) return err("select voids", rc);
    return out;
  }

  Result<std::vector<PeerRecord>> peers() override {
    auto st = prepare("SELECT id, endpoints, last_seen FROM peers ORDER BY id");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    std::vector<PeerRecord> out;
    int rc;
    while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
      PeerRecord p;
      if (!read_fixed(*st, 0, p.id.bytes)) return Status::corrupt(path_ + ": peers: bad id");
      std::string eps = column_text(*st, 1);
      std::size_t pos = 0;
      while (!eps.empty() && pos <= eps.size()) {
        std::size_t nl = eps.find('\n', pos);
        if (nl == std::string::npos) nl = eps.size();
        p.endpoints.push_back(eps.substr(pos, nl - pos));
        pos = nl + 1;
      }
      p.last_seen_unix_ms = sqlite3_column_int64(*st, 2);
      out.push_back(std::move(p));
    }
    if (rc != SQLITE_DONE) return err("select peers", rc);
    return out;
  }

  // --- artifact index ---

  Status index_put(std::span<const ArtifactRecord> records) override {
    return transaction("insert artifacts", [&]() -> Status {
      auto st = prepare(
          "INSERT INTO artifacts (digest, size, kind, pinned, last_used) "
          "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(digest) DO UPDATE SET "
          "last_used = MAX(last_used, excluded.last_used), size = excluded.size, "
          "kind = excluded.kind");
      if (!st.is_ok()) return st.status();
      for (const auto& r : records) {
        StmtGuard g(*st);
        bind_blob(*st, 1, as_span(r.digest.bytes));
        sqlite3_bind_int64(*st, 2, static_cast<sqlite3_int64>(r.size_bytes));
        sqlite3_bind_int(*st, 3, static_cast<int>(r.kind));
        sqlite3_bind_int(*st, 4, r.pinned ? 1 : 0);
        sqlite3_bind_int64(*st, 5, static_cast<sqlite3_int64>(r.last_used));
        VOW_RETURN_IF_ERROR(step_done(*st, "insert artifacts"));
      }
      return Status::ok();
    });
  }

  Status index_remove(const Digest& digest) override {
    auto st = prepare("DELETE FROM artifacts WHERE digest = ?1");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    bind_blob(*st, 1, as_span(digest.bytes));
    return step_done(*st, "delete artifacts");
  }

  Result<std::optional<ArtifactRecord>> index_get(const Digest& digest) override {
    auto st =
        prepare("SELECT digest, size, kind, pinned, last_used FROM artifacts WHERE digest = ?1");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    bind_blob(*st, 1, as_span(digest.bytes));
    int rc = sqlite3_step(*st);
    if (rc == SQLITE_DONE) return std::optional<ArtifactRecord>();
    if (rc != SQLITE_ROW) return err("select artifacts", rc);
    auto rec = read_artifact(*st);
    if (!rec.is_ok()) return rec.status();
    return std::optional<ArtifactRecord>(*rec);
  }

  Result<std::uint64_t> index_bytes() override {
    auto st = prepare("SELECT COALESCE(SUM(size), 0) FROM artifacts");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    int rc = sqlite3_step(*st);
    if (rc != SQLITE_ROW) return err("sum artifact sizes", rc);
    return static_cast<std::uint64_t>(sqlite3_column_int64(*st, 0));
  }

  Result<std::vector<Digest>> index_digests() override {
    auto st = prepare("SELECT digest FROM artifacts");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    std::vector<Digest> out;
    int rc;
    while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
      Digest d;
      if (!read_fixed(*st, 0, d.bytes)) return Status::corrupt(path_ + ": artifacts: bad digest");
      out.push_back(d);
    }
    if (rc != SQLITE_DONE) return err("select artifact digests", rc);
    return out;
  }

  Result<std::vector<ArtifactRecord>> index_list() override {
    auto st = prepare(
        "SELECT digest, size, kind, pinned, last_used FROM artifacts ORDER BY last_used, digest");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    std::vector<ArtifactRecord> out;
    int rc;
    while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
      auto rec = read_artifact(*st);
      if (!rec.is_ok()) return rec.status();
      out.push_back(*rec);
    }
    if (rc != SQLITE_DONE) return err("select artifacts", rc);
    return out;
  }

  Status index_set_pinned(const Digest& digest, bool pinned) override {
    auto st = prepare("UPDATE artifacts SET pinned = ?2 WHERE digest = ?1");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    bind_blob(*st, 1, as_span(digest.bytes));
    sqlite3_bind_int(*st, 2, pinned ? 1 : 0);
    VOW_RETURN_IF_ERROR(step_done(*st, "update artifacts pinned"));
    if (sqlite3_changes(db_) == 0) return Status::not_found("artifact " + digest.hex());
    return Status::ok();
  }

  Status index_touch(std::span<const std::pair<Digest, std::uint64_t>> ticks) override {
    return transaction("update artifacts last_used", [&]() -> Status {
      auto st = prepare("UPDATE artifacts SET last_used = MAX(last_used, ?2) WHERE digest = ?1");
      if (!st.is_ok()) return st.status();
      for (const auto& [digest, tick] : ticks) {
        StmtGuard g(*st);
        bind_blob(*st, 1, as_span(digest.bytes));
        sqlite3_bind_int64(*st, 2, static_cast<sqlite3_int64>(tick));
        VOW_RETURN_IF_ERROR(step_done(*st, "update artifacts last_used"));
      }
      return Status::ok();
    });
  }

  Result<std::uint64_t> index_max_tick() override {
    auto st = prepare("SELECT COALESCE(MAX(last_used), 0) FROM artifacts");
    if (!st.is_ok()) return st.status();
    StmtGuard g(*st);
    int rc = sqlite3_step(*st);
    if (rc != SQLITE_ROW) return err("select max last_used", rc);
    return static_cast<std::uint64_t>(sqlite3_column_int64(*st, 0));
  }

 private:
  static void bind_blob(sqlite3_stmt* st, int i, std::span<const std::uint8_t> b) {
    sqlite3_bind_blob(st, i, b.data(), static_cast<int>(b.size()), SQLITE_STATIC);
  }

  template <std::size_t N>
  static bool read_fixed(sqlite3_stmt* st, int col, std::array<std::uint8_t, N>& out) {
    if (sqlite3_column_type(st, col) != SQLITE_BLOB) return false;
    const void* p = sqlite3_column_blob(st, col);
    if (sqlite3_column_bytes(st, col) != static_cast<int>(N)) return false;
    std::memcpy(out.data(), p, N);
    return true;
  }

  static std::string column_text(sqlite3_stmt* st, int col) {
    const auto* p = sqlite3_column_text(st, col);
    int n = sqlite3_column_bytes(st, col);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n))
             : std::string();
  }

  Result<ArtifactRecord> read_artifact(sqlite3_stmt* st) {
    ArtifactRecord r;
    if (!read_fixed(st, 0, r.digest.bytes))
      return Status::corrupt(path_ + ": artifacts: bad digest");
    r.size_bytes = static_cast<std::uint64_t>(sqlite3_column_int64(st, 1));
    int kind = sqlite3_column_int(st, 2);
    if (kind != 0 && kind != 1) {
      return Status::corrupt(path_ + ": artifacts: bad kind for " + r.digest.hex());
    }
    r.kind = static_cast<ArtifactKind>(kind);
    r.pinned = sqlite3_column_int(st, 3) != 0;
    r.last_used = static_cast<std::uint64_t>(sqlite3_column_int64(st, 4));
    return r;
  }

  // Reads one statement row (columns kStatementColumns); kCorrupt if a column is
  // malformed or the row checksum does not match.
  Status read_row(sqlite3_stmt* st, StoredStatement& s) {
    bool ok_author = read_fixed(st, 0, s.author.bytes);
    s.seq = static_cast<std::uint64_t>(sqlite3_column_int64(st, 1));
    // Named only when a row is bad: building it for every row was a sixth of reading the
    // ledger back at a restart.
    auto where = [&] {
      return path_ + ": statement " + s.author.hex().substr(0, 16) + "/" + std::to_string(s.seq);
    };
    if (!ok_author) return Status::corrupt(where() + ": bad author column");
    int kind = sqlite3_column_int(st, 2);
    if (kind < 0 || kind > static_cast<int>(StatementKind::kHorizon)) {
      return Status::corrupt(where() + ": bad kind column");
    }
    s.kind = static_cast<StatementKind>(kind);
    if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
      Digest d;
      if (!read_fixed(st, 3, d.bytes)) return Status::corrupt(where() + ": bad job column");
      s.job = d;
    }
    s.epoch = static_cast<std::uint32_t>(sqlite3_column_int64(st, 4));
    if (sqlite3_column_type(st, 5) != SQLITE_NULL) {
      Digest d;
      if (!read_fixed(st, 5, d.bytes)) return Status::corrupt(where() + ": bad outputs column");
      s.outputs_digest = d;
    }
    if (sqlite3_column_type(st, 6) != SQLITE_NULL) s.ok = sqlite3_column_int(st, 6) != 0;
    const void* b = sqlite3_column_blob(st, 7);
    int n = sqlite3_column_bytes(st, 7);
    s.bytes.assign(static_cast<const char*>(b), static_cast<std::size_t>(n));
    if (!read_fixed(st, 8, s.signature)) return Status::corrupt(where() + ": bad signature column");
    s.received_unix_ms = sqlite3_column_int64(st, 9);
    read_path(st, 11, s.path);
    Digest check;
    if (!read_fixed(st, 10, check.bytes) || check != statement_row_check(s)) {
      return Status::corrupt(where() + ": row checksum mismatch (row changed outside vow)");
    }
    return Status::ok();
  }

  Result<std::vector<StoredStatement>> collect(sqlite3_stmt* st, std::size_t limit,
                                               const char* op) {
    std::vector<StoredStatement> out;
    int rc = SQLITE_DONE;
    while (out.size() < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
      StoredStatement s;
      VOW_RETURN_IF_ERROR(read_row(st, s));
      out.push_back(std::move(s));
    }
    if (out.size() < limit && rc != SQLITE_DONE) return err(op, rc);
    return out;
  }

  // Inserts S inside an open transaction: no-op for an identical duplicate, kInvalid
  // for equivocation. Adds S's author to TOUCHED when a row was added, so the caller
  // advances that author's frontier once per transaction.
  Status insert_locked(const StoredStatement& s, std::set<AgentKey>& touched) {
    VOW_RETURN_IF_ERROR(validate_stored_statement(s));
    static const std::string sql = std::string("INSERT INTO statements (") + kStatementColumns +
                                   ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) "
                                   "ON CONFLICT (author, seq) DO NOTHING";
    auto st = prepare(sql.c_str());
    if (!st.is_ok()) return st.status();
    Digest check = statement_row_check(s);
    {
      StmtGuard g(*st);
      bind_blob(*st, 1, as_span(s.author.bytes));
      sqlite3_bind_int64(*st, 2, static_cast<sqlite3_int64>(s.seq));
      sqlite3_bind_int(*st, 3, static_cast<int>(s.kind));
      if (s.job) bind_blob(*st, 4, as_span(s.job->bytes));
      sqlite3_bind_int64(*st, 5, s.epoch);
      if (s.outputs_digest) bind_blob(*st, 6, as_span(s.outputs_digest->bytes));
      if (s.ok) sqlite3_bind_int(*st, 7, *s.ok ? 1 : 0);
      sqlite3_bind_blob(*st, 8, s.bytes.data(), static_cast<int>(s.bytes.size()), SQLITE_STATIC);
      bind_blob(*st, 9, as_span(s.signature));
      sqlite3_bind_int64(*st, 10, s.received_unix_ms);
      bind_blob(*st, 11, as_span(check.bytes));
      bind_path(*st, 12, s.path);
      VOW_RETURN_IF_ERROR(step_done(*st, "insert statements"));
    }
    if (sqlite3_changes(db_) == 1) {
      touched.insert(s.author);
      return Status::ok();
    }
    // (author, seq) was already stored: the same statement again, or equivocation.
    auto existing = get(s.author, s.seq);
    if (!existing.is_ok()) return existing.status();
    if (existing->has_value() && (*existing)->bytes == s.bytes) return Status::ok();
    return equivocation_status(s);
  }

  // One void slot inside an open transaction: its advert row goes, and the slot joins
  // the range ending just below it and the one starting just above it, if any.
  Status put_void_locked(const StatementRef& r) {
    {
      auto del = prepare("DELETE FROM statements WHERE author = ?1 AND seq = ?2 AND kind = ?3");
      if (!del.is_ok()) return del.status();
      StmtGuard g(*del);
      bind_blob(*del, 1, as_span(r.author.bytes));
      sqlite3_bind_int64(*del, 2, static_cast<sqlite3_int64>(r.seq));
      sqlite3_bind_int(*del, 3, static_cast<int>(StatementKind::kAdvert));
      VOW_RETURN_IF_ERROR(step_done(*del, "delete void advert"));
    }
    auto lookup = [&](const char* sql, std::uint64_t seq) -> Result<std::optional<std::pair<std::uint64_t, std::uint64_t>>> {
      auto st = prepare(sql);
      if (!st.is_ok()) return st.status();
      StmtGuard g(*st);
      bind_blob(*st, 1, as_span(r.author.bytes));
      sqlite3_bind_int64(*st, 2, static_cast<sqlite3_int64>(seq));
      int rc = sqlite3_step(*st);
      if (rc == SQLITE_ROW) {
        return std::optional(std::pair{static_cast<std::uint64_t>(sqlite3_column_int64(*st, 0)),
                                       static_cast<std::uint64_t>(sqlite3_column_int64(*st, 1))});
      }
      if (rc != SQLITE_DONE) return err("select voids", rc);
      return std::optional<std::pair<std::uint64_t, std::uint64_t>>();
    };
    // Already void (a range holding it)?
    auto within = lookup(
        "SELECT first, last FROM voids WHERE author = ?1 AND first <= ?2 ORDER BY first DESC "
        "LIMIT 1",
        r.seq);
    if (!within.is_ok()) return within.status();
    if (within->has_value() && (*within)->second >= r.seq) return Status::ok();
    std::uint64_t first = r.seq;
    std::uint64_t last = r.seq;
    if (within->has_value() && (*within)->second + 1 == r.seq) first = (*within)->first;
    auto above = lookup("SELECT first, last FROM voids WHERE author = ?1 AND first = ?2",
                        r.seq + 1);
    if (!above.is_ok()) return above.status();
    if (above->has_value()) last = (*above)->second;
    auto erase = prepare("DELETE FROM voids WHERE author = ?1 AND first IN (?2, ?3)");
    if (!erase.is_ok()) return erase.status();
    {
      StmtGuard g(*erase);
      bind_blob(*erase, 1, as_span(r.author.bytes));
      sqlite3_bind_int64(*erase, 2, static_cast<sqlite3_int64>(first));
      sqlite3_bind_int64(*erase, 3, static_cast<sqlite3_int64>(r.seq + 1));
      VOW_RETURN_IF_ERROR(step_done(*erase, "delete voids"));
    }
    auto put = prepare("INSERT INTO voids (author, first, last) VALUES (?1, ?2, ?3)");
    if (!put.is_ok()) return put.status();
    StmtGuard g(*put);
    bind_blob(*put, 1, as_span(r.author.bytes));
    sqlite3_bind_int64(*put, 2, static_cast<sqlite3_int64>(first));
    sqlite3_bind_int64(*put, 3, static_cast<sqlite3_int64>(last));
    return step_done(*put, "insert voids");
  }

  // Raises each author's contiguous frontier past every seq now held.
  Status advance_frontiers(const std::set<AgentKey>& authors) {
    for (const auto& author : authors) VOW_RETURN_IF_ERROR(advance_frontier(author));
    return Status::ok();
  }

  Status advance_frontier(const AgentKey& author) {
    auto sel = prepare("SELECT contiguous FROM frontier WHERE author = ?1");
    if (!sel.is_ok()) return sel.status();
    std::uint64_t cur = 0;
    {
      StmtGuard g(*sel);
      bind_blob(*sel, 1, as_span(author.bytes));
      int rc = sqlite3_step(*sel);
      if (rc == SQLITE_ROW) {
        cur = static_cast<std::uint64_t>(sqlite3_column_int64(*sel, 0));
      } else if (rc != SQLITE_DONE) {
        return err("select frontier", rc);
      }
    }
    // Walk the author's seqs and void ranges above the frontier in order until the
    // first gap.
    auto walk = prepare(
        "SELECT seq, seq FROM statements WHERE author = ?1 AND seq > ?2 UNION ALL "
        "SELECT first, last FROM voids WHERE author = ?1 AND last > ?2 ORDER BY 1");
    if (!walk.is_ok()) return walk.status();
    std::uint64_t next = cur;
    {
      StmtGuard g(*walk);
      bind_blob(*walk, 1, as_span(author.bytes));
      sqlite3_bind_int64(*walk, 2, static_cast<sqlite3_int64>(cur));
      int rc;
      while ((rc = sqlite3_step(*walk)) == SQLITE_ROW) {
        auto first = static_cast<std::uint64_t>(sqlite3_column_int64(*walk, 0));
        auto last = static_cast<std::uint64_t>(sqlite3_column_int64(*walk, 1));
        if (first > next + 1) break;
        next = std::max(next, last);
      }
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return err("select statements", rc);
    }
    if (next == cur) return Status::ok();
    auto up = prepare("INSERT OR REPLACE INTO frontier (author, contiguous) VALUES (?1, ?2)");
    if (!up.is_ok()) return up.status();
    StmtGuard g(*up);
    bind_blob(*up, 1, as_span(author.bytes));
    sqlite3_bind_int64(*up, 2, static_cast<sqlite3_int64>(next));
    VOW_RETURN_IF_ERROR(step_done(*up, "update frontier"));
    if (grouped_) moves_[author] = next;
    return Status::ok();
  }

  sqlite3* db_;
  std::string path_;
  bool synchronous_full_;  // SqliteOptions::synchronous_full
  bool grouped_ = false;  // inside write_together
  bool whole_ = false;    // ... as write_all_or_nothing: writes carry no savepoint
  Status group_failed_;   // the first write that failed in such a group
  VersionVector moves_;   // frontiers the open group moved
  std::map<const char*, sqlite3_stmt*> cache_;  // keyed by the SQL text's address
};

}  // namespace

Result<std::unique_ptr<LedgerStore>> open_sqlite_ledger(const std::string& path,
                                                        const SqliteOptions& options) {
  sqlite3* db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags,
                           options.vfs_name.empty() ? nullptr : options.vfs_name.c_str());
  if (rc != SQLITE_OK) {
    Status s = sqlite_status(db, path, "open", rc);
    sqlite3_close_v2(db);
    return s;
  }
  auto ledger = std::make_unique<SqliteLedger>(db, path, options.synchronous_full);
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_handler(db, short_busy_wait,
                       reinterpret_cast<void*>(static_cast<std::intptr_t>(options.busy_timeout_ms)));
  // Refuse a newer schema before changing anything in the file (even its journal mode).
  auto v = user_version(db, path);
  if (!v.is_ok()) return v.status();
  VOW_RETURN_IF_ERROR(check_version(*v, path));
  {
    sqlite3_stmt* st = nullptr;
    rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, nullptr);
    if (rc != SQLITE_OK) return sqlite_status(db, path, "set journal_mode", rc);
    rc = sqlite3_step(st);
    std::string mode = rc == SQLITE_ROW ? reinterpret_cast<const char*>(sqlite3_column_text(st, 0))
                                        : std::string();
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return sqlite_status(db, path, "set journal_mode", rc);
    if (mode != "wal") return Status::io(path + ": cannot use WAL journal mode (got " + mode + ")");
  }
  VOW_RETURN_IF_ERROR(ledger->exec(
      options.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
      "set synchronous"));
  if (!options.auto_checkpoint) {
    VOW_RETURN_IF_ERROR(ledger->exec("PRAGMA wal_autocheckpoint=0", "set wal_autocheckpoint"));
  }
  VOW_RETURN_IF_ERROR(migrate_schema(db, path));
  return std::unique_ptr<LedgerStore>(std::move(ledger));
}

}  // namespace vow::store
