// fsck: checks an agent's state directory offline, or a live LedgerStore + artifact root.
//
// Checks, and the problem each failure reports (one line each):
//   - every statement row: its checksum (kCorrupt) and its Ed25519 signature over the
//     stored bytes with the author as public key (kBadSignature); optionally a caller
//     check (the daemon passes transport's decoder to compare bytes with columns);
//   - every indexed artifact: its object exists (kMissing) and hashes to its digest
//     (kCorrupt); a tree decodes and each child is held (kMissing);
//   - every file under artifacts/: objects without an index row, leftover temporaries
//     and unknown files (kUnreferenced).
// fsck changes nothing in the artifact store (it does not open the ArtifactStore, whose
// open() would repair the unreferenced objects a crash leaves). fsck_state_dir opens
// vow.db the normal way, which migrates a schema older than this build's.
//
// Thread-safety: uses the LedgerStore it is given, from the calling thread.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "store/env.h"
#include "store/ledger.h"

namespace vow::store {

struct FsckProblem {
  enum class Kind { kCorrupt, kMissing, kUnreferenced, kBadSignature, kError };
  Kind kind = Kind::kError;
  std::string subject;  // "artifact <hex>", "statement <author>/<seq>", a path
  std::string detail;
  // "corrupt: artifact 3f2a...: content does not match its digest"
  std::string to_string() const;
};
const char* fsck_kind_name(FsckProblem::Kind kind);

struct FsckReport {
  std::vector<FsckProblem> problems;
  std::uint64_t statements_checked = 0;
  std::uint64_t artifacts_checked = 0;
  bool clean() const { return problems.empty(); }
};

struct FsckOptions {
  // Extra per-statement check (non-ok: reported as kCorrupt with its message).
  std::function<Status(const StoredStatement&)> check_statement;
  // Most problems listed (the rest are counted in one final line).
  std::size_t max_problems = 10'000;
};

// Checks LEDGER and the artifact store at ARTIFACTS_ROOT. Fails only if the checks
// themselves cannot run (the database cannot be read); everything wrong in the state is
// a problem in the report.
Result<FsckReport> fsck(LedgerStore& ledger, const std::string& artifacts_root, Env& env,
                        const FsckOptions& options = {});

// Opens STATE_DIR/vow.db (kNotFound if absent) and checks it and STATE_DIR/artifacts.
Result<FsckReport> fsck_state_dir(const std::string& state_dir, const FsckOptions& options = {});

}  // namespace vow::store
