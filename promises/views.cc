// Read-only queries of the core, for status and the command line.
#include <algorithm>
#include <iterator>

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
std::size_t Core::replication_checked() const { return impl_->replication.last_checked(); }
std::uint64_t Core::replication_walks() const { return impl_->replication.walks(); }
std::pair<std::uint64_t, std::uint64_t> Core::holdings_version() const {
  return {impl_->holdings.incarnation(), impl_->holdings.version()};
}
const std::set<Digest>* Core::peer_holdings(const AgentKey& peer) const {
  return impl_->holdings.of(peer);
}
std::pair<std::uint64_t, std::uint64_t> Core::peer_holdings_version(const AgentKey& peer) const {
  return impl_->holdings.seen(peer);
}
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

const std::map<std::string, std::uint64_t>& Core::plans_made() const {
  return impl_->plans_made;
}

std::vector<OwnRun> Core::running() const {
  std::vector<OwnRun> out;
  for (const auto& [job, run] : impl_->running) out.push_back(OwnRun{run.ref, run.epoch});
  for (const auto& [job, row] : impl_->restored) out.push_back(row);
  for (const auto& [job, row] : impl_->stopping) out.push_back(row);
  return out;
}

std::optional<JobView> Core::job(const Digest& id) { return impl_->job_view(id); }

std::optional<JobView> Core::Impl::job_view(const Digest& id, bool details) {
  Impl& s = *this;
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
  } else if (!js->releases.empty()) {
    v.job = std::get<Release>(js->releases.front()->body).job;
  } else if (!js->accepts.empty()) {
    v.job = std::get<Accept>(js->accepts.front()->body).job;
  }
  v.job.job = id;  // named by a statement of the job that is not its claim or result
  const Statement* canon = s.book.canonical(id);
  bool standing = false;
  if (js != nullptr && !details) {
    // Only a planned job without a canonical result reads its standing claims.
    if (planned != nullptr && canon == nullptr) {
      for (const Statement* st : js->claims) {
        standing = standing || s.claim_standing(id, *st);
      }
    }
  } else if (js != nullptr) {
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
  s.refresh_job_index();
  std::vector<JobView> out;
  out.reserve(s.job_index.entries.size());
  for (const auto& [id, e] : s.job_index.entries) {
    if (auto v = s.job_view(id)) out.push_back(std::move(*v));
  }
  return out;
}

// ---- the job index ----

std::uint64_t& JobCounts::of(JobState state) {
  switch (state) {
    case JobState::kReady:
      return ready;
    case JobState::kRunning:
      return running;
    case JobState::kDone:
      return done;
    case JobState::kFailed:
      return failed;
    case JobState::kSuperseded:
      return superseded;
  }
  return ready;
}

std::uint64_t JobCounts::of(JobState state) const {
  return const_cast<JobCounts*>(this)->of(state);
}

void JobIndex::note(const Statement& st) {
  switch (st.kind()) {
    case StatementKind::kClaim:
      dirty.insert(std::get<Claim>(st.body).job.job);
      break;
    case StatementKind::kRelease:
      dirty.insert(std::get<Release>(st.body).job.job);
      break;
    case StatementKind::kResult:
      dirty.insert(std::get<JobResult>(st.body).job.job);
      break;
    case StatementKind::kRetry:
      dirty.insert(std::get<Retry>(st.body).job.job);
      break;
    case StatementKind::kAccept:
      dirty.insert(std::get<Accept>(st.body).job.job);  // the job is in the ledger now
      break;
    case StatementKind::kCheckpoint:
      dirty.insert(std::get<Checkpoint>(st.body).job.job);
      break;
    case StatementKind::kSourceVersion:
      // The jobs a plan made with it changes are marked by that plan (ensure_plan), not
      // every job: one changed file of a 100,000-entry source looked at every job again.
      source_versions.emplace_back(st.author, st.seq);
      sources_dirty = true;
      break;
    case StatementKind::kAdvert:
      // Source bindings read adverts. Claims and results read their author's advert in
      // force when it claimed: on_advert marks every job when the claim book says a
      // binding may have changed, and a plan made again marks the jobs it changes; an
      // advert newer than each claim of its author (a joiner's, a restart's) changes
      // none (at 100,000 jobs every agent looked at every job again when one joined).
      sources_dirty = true;
      break;
    case StatementKind::kPipeline:
      // As a source version: what a definition changes is the plan (no binding reads
      // one: a claim binds by its author's advert). Each agent publishes the
      // definitions its files name at every start, held already by the others.
      break;
    case StatementKind::kHorizon:
      break;  // a horizon applied marks the jobs it changed
  }
}

void Core::Impl::index_job(const Digest& id) {
  JobIndex& x = job_index;
  ++x.looked_at;
  // One search: the entry if held, else where it goes (a rebuild inserts in id order).
  auto it = x.entries.lower_bound(id);
  const bool held = it != x.entries.end() && it->first == id;
  if (held) {
    const JobIndex::Entry& old = it->second;
    for (const AgentKey& a : old.claimants) {
      auto o = x.claimed_open.find(a);
      if (o != x.claimed_open.end() && o->second.erase(id) && o->second.empty())
        x.claimed_open.erase(o);
    }
    JobCounts& c = x.counts[{old.ref.pipeline, old.ref.stage}];
    --c.of(old.state);
    if (old.nondeterministic) --c.nondeterministic;
    for (const auto& [reason, n] : old.unbound) {
      auto u = x.job_unbound.find(reason);
      if ((u->second -= n) == 0) x.job_unbound.erase(u);
    }
  }
  std::optional<JobView> v = job_view(id, /*details=*/false);
  if (!v) {
    if (held) x.entries.erase(it);
    return;
  }
  JobIndex::Entry e;
  e.ref = std::move(v->job);
  e.state = v->state;
  e.nondeterministic = v->nondeterministic;
  if (const JobStatements* js = ledger.job(id)) {
    if (e.state == JobState::kReady || e.state == JobState::kRunning) {
      for (const Statement* st : js->claims) {
        if (st->author == config.key) continue;  // own claims stand by own runs
        if (std::find(e.claimants.begin(), e.claimants.end(), st->author) != e.claimants.end())
          continue;
        e.claimants.push_back(st->author);
        x.claimed_open[st->author].insert(id);
      }
    }
    std::map<std::string, std::uint32_t> unbound;
    for (const Statement* st : js->claims) {
      ClaimBinding b = book.claim_binding(id, *st);
      if (b != ClaimBinding::kBound) ++unbound[std::string("claim: ") + claim_binding_name(b)];
    }
    for (const Statement* st : js->results) {
      ResultBinding b = book.result_binding(id, *st);
      if (b != ResultBinding::kBound) {
        ++unbound[std::string("result: ") + result_binding_name(b)];
      }
    }
    e.unbound.assign(unbound.begin(), unbound.end());
  }
  JobCounts& c = x.counts[{e.ref.pipeline, e.ref.stage}];
  ++c.of(e.state);
  if (e.nondeterministic) ++c.nondeterministic;
  for (const auto& [reason, n] : e.unbound) x.job_unbound[reason] += n;
  if (held) {
    it->second = std::move(e);
  } else {
    x.entries.emplace_hint(it, id, std::move(e));
  }
}

void Core::Impl::refresh_job_index() {
  JobIndex& x = job_index;
  ensure_plan();
  // A plan put off while catching up (ensure_plan): the index stays as it was, and the
  // jobs that arrived meanwhile are looked at once, against the plan made when the pull
  // ends (looked at against the old plan first, a joiner's 100,000 jobs were each
  // indexed twice, as superseded and then as done).
  if (plan_dirty) return;
  // What every job's state reads: the plan, peers' liveness, the equivocators.
  if (x.plan.lock() != plan->identity) {
    x.plan = plan->identity;
    x.all_dirty = true;
  }
  // A peer's liveness decides only whether its claims of jobs not yet done stand: those
  // jobs are looked at again (at 100,000 jobs looking at all of them after each peer
  // suspected held the loop for a third of a second, and got more peers suspected).
  std::map<AgentKey, bool> live;
  for (const auto& [key, p] : members.peers()) live.emplace(key, is_live(key));
  if (live != x.live) {
    auto changed = [&](const AgentKey& key) {
      auto o = x.claimed_open.find(key);
      if (o != x.claimed_open.end()) x.dirty.insert(o->second.begin(), o->second.end());
    };
    for (const auto& [key, now] : live) {
      auto was = x.live.find(key);
      if (was == x.live.end() || was->second != now) changed(key);
    }
    for (const auto& [key, was] : x.live) {
      if (!live.count(key)) changed(key);
    }
    x.live = std::move(live);
  }
  if (ledger.proofs().size() != x.equivocators) {
    x.equivocators = ledger.proofs().size();
    x.all_dirty = true;
    x.sources_dirty = true;
  }
  // Own runs: a job whose run here began, ended, changed epoch or moved between running,
  // restored and stopping (a restored row resumed makes its claim stand).
  std::map<Digest, std::pair<int, std::uint32_t>> runs;
  for (const auto& [job, run] : running) runs[job] = {0, run.epoch};
  for (const auto& [job, row] : restored) runs.emplace(job, std::make_pair(1, row.epoch));
  for (const auto& [job, row] : stopping) runs.emplace(job, std::make_pair(2, row.epoch));
  if (runs != x.own_runs) {
    for (const auto& [job, what] : runs) {
      auto it = x.own_runs.find(job);
      if (it == x.own_runs.end() || it->second != what) x.dirty.insert(job);
    }
    for (const auto& [job, what] : x.own_runs) {
      if (!runs.count(job)) x.dirty.insert(job);
    }
    x.own_runs = std::move(runs);
  }
  if (x.all_dirty) {
    x.all_dirty = false;
    x.dirty.clear();
    x.entries.clear();
    x.claimed_open.clear();
    x.counts.clear();
    x.job_unbound.clear();
    for (const auto& [id, j] : plan->jobs) index_job(id);
    for (const auto& [id, js] : ledger.jobs()) {
      if (!x.entries.count(id)) index_job(id);
    }
  } else {
    for (const auto& id : x.dirty) index_job(id);
    x.dirty.clear();
    // A few more, round robin: any state a mark above missed is right again soon.
    auto it = x.entries.upper_bound(x.scrub_cursor);
    for (std::size_t n = 0; n < config.job_index_scrub && !x.entries.empty(); ++n) {
      if (it == x.entries.end()) it = x.entries.begin();
      Digest id = it->first;
      ++it;
      index_job(id);  // may erase the entry; `it` already moved past it
      x.scrub_cursor = id;
      if (it == x.entries.end()) break;
    }
  }
  for (auto it = x.counts.begin(); it != x.counts.end();) {
    const JobCounts& c = it->second;
    bool empty = c.ready + c.running + c.done + c.failed + c.superseded == 0;
    it = empty ? x.counts.erase(it) : std::next(it);
  }
  if (x.sources_dirty) {
    x.sources_dirty = false;
    x.source_unbound.clear();
    // Those no longer held (retired by a horizon) leave the list: it follows what is
    // held, not every version ever seen.
    std::erase_if(x.source_versions,
                  [&](const auto& v) { return ledger.get(v.first, v.second) == nullptr; });
    std::sort(x.source_versions.begin(), x.source_versions.end());
    x.source_versions.erase(std::unique(x.source_versions.begin(), x.source_versions.end()),
                            x.source_versions.end());
    for (const auto& [author, seq] : x.source_versions) {
      const Statement* st = ledger.get(author, seq);
      SourceBinding b = ledger.source_binding(*st);
      if (b != SourceBinding::kCounted) {
        ++x.source_unbound[std::string("source version: ") + source_binding_name(b)];
      }
    }
  }
  BindingReport& r = x.binding;
  r.equivocators.clear();
  for (const auto& [author, proof] : ledger.proofs()) r.equivocators.push_back(author);
  r.conflicts_dropped = ledger.conflicts_dropped();
  r.unbound = x.job_unbound;
  for (const auto& [reason, n] : x.source_unbound) r.unbound[reason] += n;
}

const std::map<StageKey, JobCounts>& Core::job_counts() {
  impl_->refresh_job_index();
  return impl_->job_index.counts;
}

bool Core::claim_summaries_consistent() const { return impl_->book.consistent(); }

bool Core::catching_up() const { return impl_->started && impl_->catching_up(); }

bool Core::plan_put_off() const { return impl_->plan != nullptr && impl_->plan_dirty; }

std::uint64_t Core::jobs_indexed() const { return impl_->job_index.looked_at; }

bool Core::plan_basis_current() const {
  const Impl& s = *impl_;
  return !s.plan || s.plan_dirty || plan_basis(s.plan->known, s.ledger) == s.plan_basis;
}

const BindingReport& Core::binding_summary() {
  impl_->refresh_job_index();
  return impl_->job_index.binding;
}

JobPage Core::jobs_page(const JobFilter& filter) {
  Impl& s = *impl_;
  s.refresh_job_index();
  const auto& entries = s.job_index.entries;
  auto matches = [&](const JobIndex::Entry& e) {
    return (filter.pipeline.empty() || e.ref.pipeline == filter.pipeline) &&
           (filter.stage.empty() || e.ref.stage == filter.stage) &&
           (!filter.state || e.state == *filter.state);
  };
  JobPage page;
  Digest last;
  auto it = filter.after ? entries.upper_bound(*filter.after) : entries.begin();
  for (; it != entries.end(); ++it) {
    if (!matches(it->second)) continue;
    if (filter.limit != 0 && page.jobs.size() == filter.limit) {
      page.next = last;
      break;
    }
    if (auto v = s.job_view(it->first)) {
      page.jobs.push_back(std::move(*v));
      last = it->first;
    }
  }
  return page;
}

std::vector<Digest> Core::retained() const {
  const Impl& s = *impl_;
  std::vector<Digest> keep;
  // Inputs of own runs (fetching or executing, restored, being stopped).
  auto inputs_of = [&](const Digest& job) {
    if (const PlannedJob* p = s.plan ? s.plan->find(job) : nullptr) {
      for (const auto& in : p->inputs) {
        keep.push_back(in.artifact.digest);
        for (const auto& e : in.artifact.entries) keep.push_back(e.digest);
      }
    }
  };
  for (const auto& [job, run] : s.running) inputs_of(job);
  for (const auto& [job, row] : s.restored) inputs_of(job);
  for (const auto& [job, row] : s.stopping) inputs_of(job);
  // Own latest source versions: this agent provides them.
  for (const auto& src : s.config.sources) {
    if (const Statement* st = s.ledger.own_source(s.config.key, src.pipeline, src.source)) {
      keep.push_back(std::get<SourceVersion>(st->body).artifact.digest);
    }
  }
  // Wanted by the plan (or, without one, by any canonical result or source version): the
  // digests are gathered and sorted first, then the held ones are walked in order
  // against every live peer's holdings at once (Holdings::for_each_held).
  std::vector<Digest> wanted;
  auto result_wanted = [&](const Statement* canon) {
    const auto* r = canon ? std::get_if<JobResult>(&canon->body) : nullptr;
    if (!r) return;
    for (const auto& o : r->outputs) wanted.push_back(o.artifact.digest);
    if (r->stdout_digest) wanted.push_back(*r->stdout_digest);
    if (r->stderr_digest) wanted.push_back(*r->stderr_digest);
  };
  if (s.plan && !s.plan_dirty) {
    for (const auto& [id, job] : s.plan->jobs) {
      for (const auto& in : job.inputs) {
        wanted.push_back(in.artifact.digest);
        for (const auto& e : in.artifact.entries) wanted.push_back(e.digest);
      }
      result_wanted(s.book.canonical(id));
    }
    // The latest version of every source is replicated too (replication.h): where this
    // agent is among its `replicas` holders, the tree stays, and with it (the store's GC
    // keeps what a kept tree references) every entry. Without this a GC pass removed
    // the entries of a source tree replication had fetched, which fetched them again:
    // a third of 100,000 objects on each of two agents, every 5 minutes.
    for (const auto& [dataset, st] : s.ledger.sources()) {
      wanted.push_back(std::get<SourceVersion>(st->body).artifact.digest);
    }
  } else {
    // No current plan to read: every canonical result and source version counts.
    for (const auto& [id, js] : s.ledger.jobs()) result_wanted(s.book.canonical(id));
    s.ledger.for_each([&](const Statement& st) {
      if (const auto* v = std::get_if<SourceVersion>(&st.body)) {
        wanted.push_back(v->artifact.digest);
        for (const auto& e : v->artifact.entries) wanted.push_back(e.digest);
      }
    });
  }
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  // Held here and wanted: kept unless `replicas` live peers hold it and this agent ranks
  // below them among the holders.
  int replicas = std::max(1, s.config.replicas);
  s.holdings.for_each_held(wanted, s.now_ms,
                           [&](const Digest& d, const std::vector<AgentKey>& holders) {
                             if (static_cast<int>(holders.size()) < replicas) {
                               keep.push_back(d);
                               return;
                             }
                             Digest mine = rendezvous_score(d, s.config.key);
                             int above = 0;
                             for (const auto& h : holders) {
                               above += rendezvous_score(d, h) > mine ? 1 : 0;
                             }
                             if (above < replicas) keep.push_back(d);
                           });
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
  return keep;
}

std::string Core::retention_stamp() const {
  const Impl& s = *impl_;
  std::string out;
  auto put = [&](std::uint64_t v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); };
  auto put_key = [&](const auto& k) { out.append(reinterpret_cast<const char*>(k.data()), k.size()); };
  put(s.plans_total);
  put(s.plan && !s.plan_dirty ? 1 : 0);
  put(s.ledger.vv_sum());
  put(s.ledger.floor_sum());
  put(s.holdings.generation());
  put(static_cast<std::uint64_t>(std::max(1, s.config.replicas)));
  for (const auto& src : s.config.sources) {
    out += src.pipeline + '\0' + src.source + '\0';
  }
  auto put_jobs = [&](const auto& runs) {
    put(runs.size());
    for (const auto& [job, run] : runs) put_key(job.bytes);
  };
  put_jobs(s.running);
  put_jobs(s.restored);
  put_jobs(s.stopping);
  for (const auto& [key, p] : s.members.peers()) {
    if (s.members.is_live(key, s.now_ms)) put_key(key.bytes);
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
    v.vv_sum = p.vv_sum;
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace vow::promises
