// Helpers shared by the LedgerStore implementations (internal to store/): argument checks,
// the equivocation error, and the per-row checksum SqliteLedger keeps.
//
// Pure functions; thread-safe.
#pragma once

#include "promises/digest.h"
#include "store/ledger.h"

namespace vow::store {

// Largest statement the ledger stores (a statement is also one wire message).
inline constexpr std::size_t kMaxStatementBytes = 16 * 1024 * 1024;

// kInvalid for a statement no ledger should hold (seq 0, oversized bytes, a result
// without ok).
Status validate_stored_statement(const StoredStatement& s);
// kInvalid "equivocation: ..." naming author and seq.
Status equivocation_status(const StoredStatement& s);
// BLAKE2b over every column except received_unix_ms, in a fixed tagged encoding.
Digest statement_row_check(const StoredStatement& s);

}  // namespace vow::store
