#include "promises/ledger.h"

#include <variant>

namespace vow::promises {

Ledger::AddResult Ledger::add(const Statement& statement) {
  auto& by_seq = by_author_[statement.author];
  auto it = by_seq.find(statement.seq);
  if (it != by_seq.end()) {
    return it->second == statement ? AddResult::kDuplicate : AddResult::kConflict;
  }
  auto [pos, inserted] = by_seq.emplace(statement.seq, statement);
  (void)inserted;
  ++size_;
  auto& contiguous = contiguous_[statement.author];
  std::uint64_t before = contiguous;
  while (by_seq.count(contiguous + 1) != 0) ++contiguous;
  vv_sum_ += contiguous - before;
  index(&pos->second);
  return AddResult::kNew;
}

const Statement* Ledger::get(const AgentKey& author, std::uint64_t seq) const {
  auto a = by_author_.find(author);
  if (a == by_author_.end()) return nullptr;
  auto s = a->second.find(seq);
  return s == a->second.end() ? nullptr : &s->second;
}

VersionVector Ledger::version_vector() const {
  VersionVector vv;
  for (const auto& [author, seq] : contiguous_) {
    if (seq > 0) vv[author] = seq;
  }
  return vv;
}

std::uint64_t Ledger::max_seq(const AgentKey& author) const {
  auto a = by_author_.find(author);
  if (a == by_author_.end() || a->second.empty()) return 0;
  return a->second.rbegin()->first;
}

std::vector<Statement> Ledger::missing_for(const VersionVector& theirs, std::size_t limit) const {
  std::vector<Statement> out;
  for (const auto& [author, by_seq] : by_author_) {
    std::uint64_t have = 0;
    if (auto t = theirs.find(author); t != theirs.end()) have = t->second;
    for (auto it = by_seq.upper_bound(have); it != by_seq.end(); ++it) {
      if (out.size() >= limit) return out;
      out.push_back(it->second);
    }
  }
  return out;
}

const JobStatements* Ledger::job(const Digest& job) const {
  auto it = jobs_.find(job);
  return it == jobs_.end() ? nullptr : &it->second;
}

const Statement* Ledger::source_version(const std::string& pipeline,
                                        const std::string& source) const {
  auto it = sources_.find({pipeline, source});
  return it == sources_.end() ? nullptr : it->second;
}

std::uint64_t Ledger::own_source_version(const AgentKey& author, const std::string& pipeline,
                                         const std::string& source) const {
  auto it = own_versions_.find({author, {pipeline, source}});
  return it == own_versions_.end() ? 0 : it->second;
}

void Ledger::index(const Statement* st) {
  switch (st->kind()) {
    case StatementKind::kAdvert: {
      auto& cur = adverts_[st->author];
      if (cur == nullptr || cur->seq < st->seq) cur = st;
      break;
    }
    case StatementKind::kPipeline: {
      const auto& def = std::get<PipelineDef>(st->body);
      pipelines_.emplace(def.digest, st);
      break;
    }
    case StatementKind::kSourceVersion: {
      const auto& sv = std::get<SourceVersion>(st->body);
      auto& cur = sources_[{sv.pipeline, sv.source}];
      if (cur == nullptr) {
        cur = st;
      } else {
        const auto& c = std::get<SourceVersion>(cur->body);
        if (std::tie(sv.version, st->author) > std::tie(c.version, cur->author)) cur = st;
      }
      auto& own = own_versions_[{st->author, {sv.pipeline, sv.source}}];
      if (sv.version > own) own = sv.version;
      break;
    }
    case StatementKind::kClaim:
      jobs_[*st->job()].claims.push_back(st);
      break;
    case StatementKind::kRelease:
      jobs_[*st->job()].releases.push_back(st);
      break;
    case StatementKind::kResult:
      jobs_[*st->job()].results.push_back(st);
      break;
    case StatementKind::kAccept:
      jobs_[*st->job()].accepts.push_back(st);
      break;
    case StatementKind::kCheckpoint:
    case StatementKind::kRetry:
      break;
  }
}

}  // namespace vow::promises
