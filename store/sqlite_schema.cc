// The ledger's schema and its migrations (docs/storage.md, "Schema"), and SQLite error
// mapping shared with sqlite_ledger.cc.
#include "store/sqlite_schema.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cstring>
#include <iterator>

#include "store/sqlite_ledger.h"

namespace vow::store {
namespace {

// Migration i takes the schema from version i to i + 1. Append only; never edit one
// that has shipped.
const char* const kMigrations[] = {
    // 0 -> 1
    R"sql(
CREATE TABLE statements (
  author BLOB NOT NULL,
  seq INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  job BLOB,
  epoch INTEGER NOT NULL,
  outputs_digest BLOB,
  ok INTEGER,
  bytes BLOB NOT NULL,
  signature BLOB NOT NULL,
  received_at INTEGER NOT NULL,
  row_check BLOB NOT NULL,
  PRIMARY KEY (author, seq)
);
CREATE INDEX statements_by_job ON statements(job) WHERE job IS NOT NULL;
CREATE INDEX statements_by_kind ON statements(kind);
CREATE TABLE frontier (
  author BLOB PRIMARY KEY,
  contiguous INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE own_seq (
  id INTEGER PRIMARY KEY CHECK (id = 0),
  last_seq INTEGER NOT NULL
);
INSERT INTO own_seq VALUES (0, 0);
CREATE TABLE running_jobs (
  job BLOB PRIMARY KEY,
  epoch INTEGER NOT NULL,
  pid INTEGER NOT NULL,
  work_dir TEXT NOT NULL,
  started_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE peers (
  id BLOB PRIMARY KEY,
  endpoints TEXT NOT NULL,
  last_seen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE artifacts (
  digest BLOB PRIMARY KEY,
  size INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  pinned INTEGER NOT NULL DEFAULT 0,
  last_used INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX artifacts_lru ON artifacts(last_used);
)sql",
    // 1 -> 2: equivocation proofs (the second statement of an (author, seq)).
    R"sql(
CREATE TABLE proofs (
  author BLOB PRIMARY KEY,
  seq INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  signature BLOB NOT NULL
) WITHOUT ROWID;
)sql",
    // 2 -> 3: void slots (adverts superseded at once; their rows are deleted).
    R"sql(
CREATE TABLE voids (
  author BLOB NOT NULL,
  first INTEGER NOT NULL,
  last INTEGER NOT NULL,
  PRIMARY KEY (author, first)
) WITHOUT ROWID;
)sql",
    // 3 -> 4: statements are read by (author, seq) only (the agent holds its ledger in
    // memory and answers queries from there): the indexes by job and by kind cost two
    // more B-tree writes per statement stored, and their pages, for no reader.
    R"sql(
DROP INDEX statements_by_job;
DROP INDEX statements_by_kind;
)sql",
    // 4 -> 5: statements signed together: each one's place in its batch (NULL: signed
    // alone, as every statement stored before).
    R"sql(
ALTER TABLE statements ADD COLUMN path BLOB;
ALTER TABLE proofs ADD COLUMN path BLOB;
)sql",
};
static_assert(std::size(kMigrations) == kSchemaVersion);

}  // namespace

Status sqlite_status(sqlite3* db, const std::string& path, const std::string& op, int rc) {
  std::string msg = path + ": " + op + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)) +
                    " (" + sqlite3_errstr(rc) + ", code " + std::to_string(rc) + ")";
  if (db) {
    int sys = sqlite3_system_errno(db);
    if (sys != 0) msg += ": " + std::string(std::strerror(sys));
  }
  switch (rc & 0xff) {
    case SQLITE_FULL:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::unavailable(std::move(msg));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status::corrupt(std::move(msg));
    default:
      return Status::io(std::move(msg));
  }
}

Result<int> user_version(sqlite3* db, const std::string& path) {
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr);
  if (rc != SQLITE_OK) return sqlite_status(db, path, "read user_version", rc);
  rc = sqlite3_step(st);
  int v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW) return sqlite_status(db, path, "read user_version", rc);
  return v;
}

Status check_version(int version, const std::string& path) {
  if (version > kSchemaVersion) {
    return Status::invalid(path + ": schema version " + std::to_string(version) +
                           " is newer than this vow understands (" +
                           std::to_string(kSchemaVersion) +
                           "); run a newer vow, or restore a state directory this version wrote");
  }
  if (version < 0) return Status::corrupt(path + ": negative schema version");
  return Status::ok();
}

Status migrate_schema(sqlite3* db, const std::string& path) {
  auto exec = [&](const std::string& sql, const std::string& op) -> Status {
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return sqlite_status(db, path, op, rc);
    return Status::ok();
  };
  VOW_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "migrate schema: begin"));
  Status s = [&]() -> Status {
    auto v = user_version(db, path);
    if (!v.is_ok()) return v.status();
    VOW_RETURN_IF_ERROR(check_version(*v, path));
    for (int i = *v; i < kSchemaVersion; ++i) {
      VOW_RETURN_IF_ERROR(exec(
          kMigrations[i], "migrate schema " + std::to_string(i) + " -> " + std::to_string(i + 1)));
    }
    if (*v != kSchemaVersion) {
      VOW_RETURN_IF_ERROR(
          exec("PRAGMA user_version = " + std::to_string(kSchemaVersion), "set user_version"));
    }
    return exec("COMMIT", "migrate schema: commit");
  }();
  if (!s.is_ok() && !sqlite3_get_autocommit(db)) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  return s;
}

Result<int> read_schema_version(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::not_found(path + ": no such database");
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  if (rc != SQLITE_OK) {
    Status s = sqlite_status(db, path, "open", rc);
    sqlite3_close_v2(db);
    return s;
  }
  auto v = user_version(db, path);
  sqlite3_close_v2(db);
  return v;
}

}  // namespace vow::store
