// Read-only queries of the core, for status and the command line.
#include <algorithm>

#include "promises/core_internal.h"

namespace vow::promises {

const char* job_state_name(JobState state) {
  switch (state) {
    case JobState::kReady:
      return "ready";
    case JobState::kRunning:
      return "running";
    case JobState::kDone:
      return "done";
    case JobState::kFailed:
      return "failed";
    case JobState::kSuperseded:
      return "superseded";
  }
  return "unknown";
}

const AgentKey& Core::key() const { return impl_->config.key; }
const Ledger& Core::ledger() const { return impl_->ledger; }
bool Core::holds(const Digest& digest) const { return impl_->holdings.holds(digest); }
std::vector<AgentKey> Core::holders(const Digest& digest) const {
  return impl_->live_holders(digest);
}
const std::set<Digest>& Core::held() const { return impl_->holdings.held(); }
std::uint64_t Core::last_seq() const { return impl_->last_seq; }
const Statement* Core::canonical(const Digest& job) const { return impl_->book.canonical(job); }
bool Core::nondeterministic(const Digest& job) const { return impl_->nondet.count(job) != 0; }
bool Core::equivocating(const AgentKey& author) const { return impl_->ledger.equivocating(author); }

BindingReport Core::binding_report() const {
  const Impl& s = *impl_;
  BindingReport r;
  for (const auto& [author, proof] : s.ledger.proofs()) r.equivocators.push_back(author);
  r.conflicts_dropped = s.ledger.conflicts_dropped();
  for (const auto& [id, js] : s.ledger.jobs()) {
    for (const Statement* st : js.claims) {
      ClaimBinding b = s.book.claim_binding(id, *st);
      if (b != ClaimBinding::kBound) ++r.unbound[std::string("claim: ") + claim_binding_name(b)];
    }
    for (const Statement* st : js.results) {
      ResultBinding b = s.book.result_binding(id, *st);
      if (b != ResultBinding::kBound) {
        ++r.unbound[std::string("result: ") + result_binding_name(b)];
      }
    }
  }
  s.ledger.for_each([&](const Statement& st) {
    if (st.kind() != StatementKind::kSourceVersion) return;
    SourceBinding b = s.ledger.source_binding(st);
    if (b != SourceBinding::kCounted) {
      ++r.unbound[std::string("source version: ") + source_binding_name(b)];
    }
  });
  return r;
}

const Plan& Core::plan() {
  impl_->ensure_plan();
  return *impl_->plan;
}

std::vector<OwnRun> Core::running() const {
  std::vector<OwnRun> out;
  for (const auto& [job, run] : impl_->running) out.push_back(OwnRun{run.ref, run.epoch});
  for (const auto& [job, row] : impl_->restored) out.push_back(row);
  for (const auto& [job, row] : impl_->stopping) out.push_back(row);
  return out;
}

std::optional<JobView> Core::job(const Digest& id) {
  Impl& s = *impl_;
  s.ensure_plan();
  const PlannedJob* planned = s.plan->find(id);
  const JobStatements* js = s.ledger.job(id);
  if (planned == nullptr && js == nullptr) return std::nullopt;
  JobView v;
  if (planned != nullptr) {
    v.job = planned->ref;
  } else if (!js->claims.empty()) {
    v.job = std::get<Claim>(js->claims.front()->body).job;
  } else if (!js->results.empty()) {
    v.job = std::get<JobResult>(js->results.front()->body).job;
  }
  const Statement* canon = s.book.canonical(id);
  bool standing = false;
  if (js != nullptr) {
    for (const Statement* st : js->claims) {
      const auto& c = std::get<Claim>(st->body);
      ClaimView cv{st->author, c.epoch, s.book.released(id, st->author, c.epoch),
                   s.claim_standing(id, *st),
                   s.book.claim_binding(id, *st) == ClaimBinding::kBound};
      standing = standing || cv.live;
      v.claims.push_back(cv);
    }
    for (const Statement* st : js->results) {
      const auto& r = std::get<JobResult>(st->body);
      v.results.push_back(ResultView{st->author, st->seq, r.epoch, r.ok, outputs_digest(r),
                                     st == canon,
                                     s.book.result_binding(id, *st) == ResultBinding::kBound});
    }
  }
  v.nondeterministic = s.nondet.count(id) != 0;
  v.failed_attempts = s.book.failed_attempts(id);
  int retries = planned != nullptr ? planned->retries : 0;
  if (planned == nullptr) {
    v.state = JobState::kSuperseded;
  } else if (canon != nullptr) {
    v.state = JobState::kDone;
  } else if (s.book.failed_for_good(id, retries)) {
    v.state = JobState::kFailed;
  } else if (standing) {
    v.state = JobState::kRunning;
  } else {
    v.state = JobState::kReady;
  }
  return v;
}

std::vector<JobView> Core::jobs() {
  Impl& s = *impl_;
  s.ensure_plan();
  std::set<Digest> ids;
  for (const auto& [id, j] : s.plan->jobs) ids.insert(id);
  for (const auto& [id, js] : s.ledger.jobs()) ids.insert(id);
  std::vector<JobView> out;
  for (const auto& id : ids) {
    if (auto v = job(id)) out.push_back(std::move(*v));
  }
  return out;
}

std::vector<PeerView> Core::peers() const {
  const Impl& s = *impl_;
  std::vector<PeerView> out;
  for (const auto& [key, p] : s.members.peers()) {
    PeerView v;
    v.key = key;
    v.name = p.name;
    v.liveness = s.members.liveness(key, s.now_ms);
    v.last_heard_ms = s.members.last_heard_ms(key);
    v.running = p.running;
    v.capacity = p.capacity;
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace vow::promises
