#include "agent/verify_ledger.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "agent/attest.h"
#include "promises/claim_book.h"
#include "promises/ledger.h"
#include "promises/pipeline.h"
#include "transport/codec.h"

namespace vow::agent {
namespace {

std::string name_of(const Statement& st) {
  return transport::agent_id(st.author) + "/" + std::to_string(st.seq) + " (" +
         statement_kind_name(st.kind()) + ")";
}

// Applies to `rules` the horizons the statements held put in force, in chain order, as
// an agent does after a restart: what they settled counts without its claim, and each
// source line starts where they made it start (docs/storage.md, "The ledger horizon").
// A proposal is in force when its content digest is what it says, it follows the last
// one applied, and every member it lists but its proposer endorsed that content.
void apply_horizons(promises::Ledger& rules, const std::vector<Statement>& statements) {
  std::map<std::uint64_t, std::vector<const Statement*>> proposals;
  std::map<std::pair<AgentKey, std::uint64_t>, std::set<std::pair<AgentKey, Digest>>> endorsed;
  for (const auto& st : statements) {
    const auto* h = std::get_if<Horizon>(&st.body);
    if (h == nullptr) continue;
    if (h->endorses) {
      endorsed[{h->endorses->author, h->endorses->seq}].insert({st.author, h->content});
    } else if (horizon_content(*h) == h->content) {
      proposals[h->number].push_back(&st);
    }
  }
  auto in_force = [&](const Statement* p) {
    const auto& h = std::get<Horizon>(p->body);
    const auto& by = endorsed[{p->author, p->seq}];
    return std::all_of(h.cuts.begin(), h.cuts.end(), [&](const HorizonCut& c) {
      return !c.member || c.author == p->author || by.count({c.author, h.content}) != 0;
    });
  };
  for (;;) {
    const std::uint64_t n = rules.horizon_number() + 1;
    const Horizon* next = nullptr;
    if (auto it = proposals.find(n); it != proposals.end()) {
      for (const Statement* p : it->second) {
        const auto& h = std::get<Horizon>(p->body);
        if (h.previous == rules.horizon_content() && in_force(p)) {
          next = &h;
          break;
        }
      }
    }
    // A checkpoint needs no horizon before it (those are retired once it applies).
    for (auto it = proposals.rbegin(); next == nullptr && it != proposals.rend() && it->first > n;
         ++it) {
      for (const Statement* p : it->second) {
        const auto& h = std::get<Horizon>(p->body);
        if (h.checkpoint && in_force(p)) {
          next = &h;
          break;
        }
      }
    }
    if (next == nullptr) return;
    (void)rules.apply_horizon(*next);
  }
}

}  // namespace

Result<VerifyReport> verify_ledger(store::LedgerStore& ledger) {
  std::vector<std::string> problems;
  std::vector<Statement> statements;
  Status scan =
      ledger.scan_statements([&](const store::StoredStatement& s, const Status& row) -> Status {
        std::string where =
            "statement " + transport::agent_id(s.author) + "/" + std::to_string(s.seq);
        if (!row.is_ok()) {
          problems.push_back(where + ": " + row.to_string());
          return Status::ok();
        }
        auto st = transport::decode_and_verify(s.bytes, s.signature, s.path);
        if (!st.is_ok()) {
          problems.push_back(where + ": " + st.status().to_string());
        } else if (st->author != s.author || st->seq != s.seq) {
          problems.push_back(where + ": stored under another author or sequence than it names");
        } else {
          statements.push_back(std::move(st).value());
        }
        return Status::ok();
      });
  if (!scan.is_ok()) return scan;
  // Equivocation proofs: each a second, validly signed statement of a held (author, seq).
  auto stored_proofs = ledger.proofs();
  if (!stored_proofs.is_ok()) return stored_proofs.status();
  std::vector<Statement> proofs;
  for (const auto& s : *stored_proofs) {
    auto st = transport::decode_and_verify(s.bytes, s.signature, s.path);
    if (!st.is_ok() || st->author != s.author || st->seq != s.seq) {
      problems.push_back("equivocation proof of " + transport::agent_id(s.author) +
                         ": does not verify");
    } else {
      proofs.push_back(std::move(st).value());
    }
  }
  VerifyReport report = verify_statements(statements, proofs);
  report.problems.insert(report.problems.begin(), problems.begin(), problems.end());
  return report;
}

VerifyReport verify_statements(const std::vector<Statement>& statements,
                               const std::vector<Statement>& proofs) {
  std::vector<std::string> problems;
  // The statements read by the rules every agent applies (docs/coordination.md, rules
  // 2-5): a result counts only if bound to its author's claim, a source version only in
  // its provider's line; what does not count is evidence, not lineage.
  promises::Ledger rules;
  for (const auto& st : statements) (void)rules.add(st);
  apply_horizons(rules, statements);
  for (const auto& p : proofs) {
    if (rules.add(p) != promises::Ledger::AddResult::kEquivocation) {
      problems.push_back("equivocation proof of " + transport::agent_id(p.author) +
                         ": proves nothing (no other statement " + std::to_string(p.seq) +
                         " of its author is held)");
    }
  }
  promises::ClaimBook book(rules, AgentKey{});
  rules.for_each([&](const Statement& st) { book.note(st); });
  // The rules judge the statements the ledger holds (by identity, not by value).
  auto counts = [&](const Statement& copy) {
    const Statement* st = rules.get(copy.author, copy.seq);
    if (st == nullptr || rules.equivocating(st->author)) return false;
    if (const auto* r = std::get_if<JobResult>(&st->body)) {
      return book.result_binding(r->job.job, *st) == promises::ResultBinding::kBound;
    }
    if (std::holds_alternative<SourceVersion>(st->body)) {
      return rules.source_binding(*st) == promises::SourceBinding::kCounted;
    }
    return true;
  };
  // What inputs may be: source versions, outputs of results that count, and the entries
  // of either. Not only canonical outputs: a run that read the output of a racing run of
  // a non-deterministic job, before the other's result made it non-canonical, has its
  // lineage in a result that counts (its job left the plan; docs/coordination.md).
  std::set<Digest> known;
  auto add = [&](const ArtifactRef& r) {
    known.insert(r.digest);
    for (const auto& e : r.entries) known.insert(e.digest);
  };
  std::size_t evidence = 0;
  rules.for_each([&](const Statement& st) {
    if (!counts(st)) {
      ++evidence;
      return;
    }
    if (const auto* v = std::get_if<SourceVersion>(&st.body)) add(v->artifact);
    if (const auto* r = std::get_if<JobResult>(&st.body); r != nullptr && r->ok) {
      for (const auto& o : r->outputs) add(o.artifact);
    }
  });
  std::size_t links = 0;
  for (const auto& st : statements) {
    const auto* r = std::get_if<JobResult>(&st.body);
    if (!r || !r->ok || !counts(st)) continue;
    for (const auto& in : r->inputs) {
      ++links;
      const ArtifactRef& a = in.artifact;
      if (known.count(a.digest)) continue;
      bool fan_in = a.is_tree && !a.entries.empty();
      for (const auto& e : a.entries) fan_in = fan_in && known.count(e.digest) > 0;
      if (fan_in) {
        auto d = tree_digest(a.entries);
        if (d.is_ok() && *d == a.digest) continue;
      }
      problems.push_back("statement " + name_of(st) + ": input '" + in.name + "' (" +
                         a.digest.hex() +
                         ") is no source version or output of a result that counts in the ledger");
    }
  }
  // A result's bindings name where each input came from (docs/coordination.md section
  // 7): each must name one of the result's own inputs with its digest, and a producer
  // held here must have made that digest and count, or have made bytes a statement that
  // counts made too: a run whose claim lost a same-epoch tie-break after the fact (a
  // partition's two sides ran the job) may have fed its own output to a next job before
  // its author learned it lost; the bytes are those of the result that counts, and the
  // binding says truly where the consumer took them from. (A producer not held may have
  // been retired by a horizon: nothing to check it against.)
  for (const auto& st : statements) {
    const auto* r = std::get_if<JobResult>(&st.body);
    if (!r || !counts(st)) continue;
    for (const auto& b : r->bindings) {
      ++links;
      if (!binding_matches_inputs(*r, b)) {
        problems.push_back("statement " + name_of(st) + ": binding '" + b.input + "' (" +
                           b.digest.hex() + ") names no input of the result with that digest");
        continue;
      }
      const Statement* up = rules.get(b.producer, b.producer_seq);
      if (up == nullptr) continue;
      std::string why = !made_artifact(*up, b.digest)                ? "did not make " + b.digest.hex()
                        : !counts(*up) && known.count(b.digest) == 0 ? "does not count"
                                                                     : "";
      if (!why.empty()) {
        problems.push_back("statement " + name_of(st) + ": binding '" + b.input + "' names " +
                           name_of(*up) + " as its producer, which " + why);
      }
    }
  }
  // Attestations, each rebuilt from its statement and checked under its author.
  std::map<Digest, promises::Stage> stages;
  for (const auto& st : statements) {
    const auto* p = std::get_if<PipelineDef>(&st.body);
    if (!p) continue;
    if (auto parsed = promises::parse_canonical_pipeline(p->canonical); parsed.is_ok()) {
      for (const auto& s : parsed->stages) stages.emplace(s.digest, s);
    }
  }
  std::size_t attestations = 0;
  for (const auto& st : statements) {
    const auto* field = attestation_field(st);
    if (field == nullptr || !field->has_value() || !counts(st)) continue;
    const promises::Stage* stage = nullptr;
    if (const auto* r = std::get_if<JobResult>(&st.body)) {
      auto it = stages.find(r->job.stage_digest);
      if (it == stages.end()) {
        problems.push_back("statement " + name_of(st) + ": its attestation cannot be checked: " +
                           "no pipeline in the ledger defines stage " + r->job.stage_digest.hex());
        continue;
      }
      stage = &it->second;
    }
    ++attestations;
    auto a = attestation_of(st, stage);
    if (!a.is_ok()) problems.push_back("statement " + name_of(st) + ": " + a.status().message());
  }
  VerifyReport report;
  report.attestations = attestations;
  report.statements = statements.size();
  report.links = links;
  report.evidence = evidence;
  for (const auto& [author, proof] : rules.proofs()) {
    report.equivocators.push_back(transport::agent_id(author));
  }
  report.problems = std::move(problems);
  return report;
}

}  // namespace vow::agent
