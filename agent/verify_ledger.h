// Checks everything a ledger claims (vow verify, offline against a state directory or
// live inside an agent): every statement's Ed25519 signature over its stored bytes, and
// every lineage link: each successful result's inputs must be source versions or
// outputs of successful results that count, canonical or not (a run that read a racing
// run's output before the other's result made it non-canonical), or an entry of one,
// for a fan-out shard, or a directory made of them, for a fan-in; and every attestation
// a result or source version carries (docs/provenance.md), against the stage definitions
// the ledger's pipeline statements hold. Only statements that count are checked: a result not bound
// to its author's claim, a source version outside its provider's line, or anything by
// an author proven to equivocate is evidence (docs/coordination.md, rules 2-5), counted
// in `evidence`, never a link. Each problem names the statement.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "promises/status.h"
#include "store/ledger.h"

namespace vow::agent {

struct VerifyReport {
  std::size_t statements = 0;  // verified
  std::size_t links = 0;       // lineage links checked
  std::size_t attestations = 0;  // attestation signatures checked
  std::size_t evidence = 0;      // statements held that do not count
  std::vector<std::string> equivocators;  // agent ids proven to equivocate (rule 5)
  std::vector<std::string> problems;
};

// Reads every stored statement of `ledger`. Fails only if the ledger cannot be read.
Result<VerifyReport> verify_ledger(store::LedgerStore& ledger);

// The same over statements whose signatures were checked already (the simulator's, each
// agent's disk), with the equivocation proofs held.
VerifyReport verify_statements(const std::vector<Statement>& statements,
                               const std::vector<Statement>& proofs);

}  // namespace vow::agent
