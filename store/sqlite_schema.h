// Internal to store/: the ledger schema's migrations and SQLite error mapping, shared by
// sqlite_ledger.cc and sqlite_schema.cc. Functions of one connection; no shared state.
#pragma once

#include <string>

#include "promises/status.h"

struct sqlite3;

namespace vow::store {

// "PATH: OP: <sqlite message> (<code name>, code N): <errno text>", as kUnavailable for
// SQLITE_FULL/BUSY/LOCKED, kCorrupt for SQLITE_CORRUPT/NOTADB, kIo otherwise.
Status sqlite_status(sqlite3* db, const std::string& path, const std::string& op, int rc);
Result<int> user_version(sqlite3* db, const std::string& path);
// kInvalid naming PATH and both versions if VERSION is newer than kSchemaVersion.
Status check_version(int version, const std::string& path);
// Applies every pending migration and sets user_version, in one transaction.
Status migrate_schema(sqlite3* db, const std::string& path);

}  // namespace vow::store
