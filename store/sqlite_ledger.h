// SqliteLedger: the LedgerStore (ledger.h) in one SQLite database, STATE_DIR/vow.db.
//
// WAL mode, synchronous=FULL by default (a statement is durable when insert() returns,
// so "persist before send" holds across power loss), a busy timeout, and prepared
// statements cached for the life of the connection. The schema version is kept in
// PRAGMA user_version; open() applies migrations in one transaction and refuses a
// database written by a newer vow, naming the file and both versions. The schema and
// its rules are in docs/storage.md.
//
// Each statement row carries a BLAKE2b checksum over all its columns, checked on every
// read: a row changed behind the ledger's back reads as kCorrupt naming (author, seq).
//
// Thread-safety: none; one thread owns a SqliteLedger (the connection is opened with
// SQLITE_OPEN_NOMUTEX). Only one process should open a state directory at a time; a
// second writer would wait up to busy_timeout_ms and then fail with kUnavailable.
#pragma once

#include <memory>
#include <string>

#include "store/ledger.h"

namespace vow::store {

// The schema version this build writes and understands.
inline constexpr int kSchemaVersion = 5;

struct SqliteOptions {
  // FULL: fsync the WAL on every commit. NORMAL: durable across a process crash but a
  // power loss may lose the last commits.
  bool synchronous_full = true;
  int busy_timeout_ms = 5000;
  // False: this connection's commits never checkpoint the WAL into the database (which
  // writes the pages back and syncs the database file); another connection does, with
  // LedgerStore::checkpoint(). vowd's loop connection (docs/storage.md).
  bool auto_checkpoint = true;
  // SQLite VFS to open the database with (empty: the default). Tests pass the name of
  // a FaultyVfs (faulty_vfs.h).
  std::string vfs_name;
};

// Opens (creating if absent) the database at PATH, migrating it to kSchemaVersion.
Result<std::unique_ptr<LedgerStore>> open_sqlite_ledger(const std::string& path,
                                                        const SqliteOptions& options = {});

// Reads PRAGMA user_version of the database at PATH without changing it (kNotFound if
// the file does not exist). For tools and tests.
Result<int> read_schema_version(const std::string& path);

}  // namespace vow::store
