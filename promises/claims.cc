// Per-job decisions of the core (docs/coordination.md): who claims, fencing and
// tie-breaks, fetching inputs, starting, results, retries with backoff.
#include <algorithm>
#include <limits>
#include <optional>
#include <tuple>

#include "promises/assert.h"
#include "promises/core_internal.h"

namespace vow::promises {

Plan Core::Impl::plan_now() {
  JobOutcomes outcomes;
  outcomes.canonical = [this](const Digest& j) { return book.canonical_result(j); };
  outcomes.canonical_statement = [this](const Digest& j) { return book.canonical(j); };
  outcomes.failed = [this](const Digest& j, int retries) {
    return book.failed_for_good(j, retries);
  };
  auto known = known_pipelines(own_pipelines, ledger, decoded_pipelines);
  Plan plan = make_plan(known, ledger, outcomes, &definitions);
  if (config.check_plans) {
    Plan fresh = make_plan(known, ledger, outcomes);
    auto same_jobs = std::equal(
        plan.jobs.begin(), plan.jobs.end(), fresh.jobs.begin(), fresh.jobs.end(),
        [](const auto& a, const auto& b) {
          return a.first == b.first && a.second.retries == b.second.retries &&
                 a.second.timeout_ms == b.second.timeout_ms && a.second.inputs == b.second.inputs;
        });
    auto same_stages = std::equal(
        plan.stages.begin(), plan.stages.end(), fresh.stages.begin(), fresh.stages.end(),
        [](const StagePlan& a, const StagePlan& b) {
          return a.stage_digest == b.stage_digest && a.state == b.state && a.reason == b.reason &&
                 a.jobs == b.jobs;
        });
    VOW_ASSERT(same_jobs && same_stages && plan.conflicts.size() == fresh.conflicts.size(),
               "a plan made with the cached definitions differs from one made without");
  }
  return plan;
}

void Core::Impl::ensure_plan() {
  if (!plan_dirty && plan) return;
  if (plan && catching_up()) {
    // While a pull brings the ledger in, the plan made last stays: nothing is claimed
    // until it ends (claim_open_jobs), and a plan made in the middle is out of date by
    // the next answer. A joiner at 100,000 jobs made one plan per status query and per
    // answer (each a pass over every job, and each left every job open in the backlogs
    // and the job index), a third of its catch-up. The plan is made once it ends.
    wake_at(now_ms + kPullAnswerWindowMs);
    return;
  }
  ++plans_made[plan ? replan_reason : "start"];
  ++plans_total;
  auto made = std::make_unique<Plan>(plan_now());
  if (plan) {
    // The jobs the new plan changes (in one plan only, or with other retries): the job
    // index looks at those again, not at every job, when it had read the plan replaced.
    // A job the plan no longer has is superseded (a horizon may retire it).
    const bool index_current = job_index.plan.lock() == plan->identity && !job_index.all_dirty;
    bool dropped = false;
    auto a = plan->jobs.begin();
    auto b = made->jobs.begin();
    while (a != plan->jobs.end() || b != made->jobs.end()) {
      if (b == made->jobs.end() || (a != plan->jobs.end() && a->first < b->first)) {
        dropped = true;
        if (index_current) job_index.dirty.insert(a->first);
        ++a;
      } else if (a == plan->jobs.end() || b->first < a->first) {
        if (index_current) job_index.dirty.insert(b->first);
        ++b;
      } else {
        if (index_current &&
            (a->second.retries != b->second.retries || a->second.ref.stage != b->second.ref.stage ||
             a->second.ref.pipeline != b->second.ref.pipeline)) {
          job_index.dirty.insert(a->first);
        }
        ++a;
        ++b;
      }
    }
    if (index_current) job_index.plan = made->identity;
    superseded_pending = superseded_pending || dropped;
  }
  plan = std::move(made);
  plan_basis = promises::plan_basis(plan->known, ledger);
  plan_dirty = false;
  report_conflicts();
  open_jobs.clear();
  open_place.clear();
  for (const auto& [id, job] : plan->jobs) {
    if (capacity_by_stage.count(job.ref.stage_digest) && book.canonical(id) == nullptr) {
      open_place.emplace(id, open_jobs.size());
      open_jobs.push_back(&job);
    }
  }
  backlog_dirty = true;
  plan_open_stage.clear();
  plan_open_count.assign(plan->stages.size(), 0);
  for (std::size_t i = 0; i < plan->stages.size(); ++i) {
    for (const Digest& id : plan->stages[i].jobs) {
      if (book.canonical(id) != nullptr) continue;
      if (plan_open_stage.emplace(id, i).second) ++plan_open_count[i];
    }
  }
}

void Core::Impl::note_canonical_result(const Digest& job) {
  if (plan_dirty || !plan) return;
  auto it = plan_open_stage.find(job);
  if (it != plan_open_stage.end()) {
    if (plan_open_count[it->second] <= 1) {
      // The last open job of its stage: its outputs now exist for consumers.
      replan("stage_done");
      return;
    }
    // Its stage still has open jobs: the plan stays as it is.
    --plan_open_count[it->second];
    plan_open_stage.erase(it);
    replication.note_canonical(job);
    return;
  }
  // A job the plan does not have: what is planned reads only the results of planned
  // jobs, so nothing changes (a plan made again later reads it).
  const PlannedJob* planned = plan->find(job);
  if (planned == nullptr) return;
  // Another canonical result for a job done before: it changes the plan only through
  // its stage's outputs, which exist only once every job of the stage is done. A
  // catch-up meets this for every job whose result arrives before the claim that
  // outranks it; making the plan again for each cost a third of a second at 30,000 jobs.
  for (std::size_t i = 0; i < plan->stages.size(); ++i) {
    const StagePlan& sp = plan->stages[i];
    if (sp.stage_digest != planned->ref.stage_digest || sp.pipeline != planned->ref.pipeline)
      continue;
    if (sp.state == StageState::kPlanned && plan_open_count[i] > 0) {
      replication.note_canonical(job);
      return;
    }
    break;
  }
  replan("result_again");
}

void Core::Impl::rebuild_candidates() {
  if (!candidates_dirty) return;
  candidates.clear();
  ranking_cache.clear();
  backlog_dirty = true;
  for (const auto& [author, st] : ledger.adverts()) {
    if (ledger.equivocating(author)) continue;
    for (const auto& pr : std::get<Advert>(st->body).promises) {
      if (pr.capacity > 0) candidates[pr.stage_digest].push_back(author);
    }
  }
  candidates_dirty = false;
}

namespace {

// The one agent every input of JOB comes from (the author of each result, or the
// provider of each source version, its bindings name), unless JOB is a shard of a
// fan-out: that agent runs it without fetching anything. Shards are left to rendezvous
// order, which spreads them over the candidates (their parallelism is worth more than
// their inputs' locality). nullopt when the inputs come from several agents, or the
// job binds none (a fan-in too large to bind).
std::optional<AgentKey> input_holder(const PlannedJob& job) {
  if (!job.ref.shard.empty() || job.bindings.empty()) return std::nullopt;
  const AgentKey& holder = job.bindings.front().producer;
  for (const auto& b : job.bindings) {
    if (b.producer != holder) return std::nullopt;
  }
  return holder;
}

}  // namespace

// Candidates of a job, best first: agents that already failed this job behind the
// others (a retry prefers another candidate); among the rest, the holder of all its
// inputs first (input_holder), then rendezvous order.
const std::vector<AgentKey>& Core::Impl::ranking(const PlannedJob& job) {
  rebuild_candidates();
  const Digest& id = job.ref.job;
  std::optional<AgentKey> holder = input_holder(job);
  auto cached = ranking_cache.find(id);
  if (cached != ranking_cache.end() && cached->second.holder == holder) {
    return cached->second.order;
  }
  std::vector<std::pair<std::tuple<int, bool, Digest>, AgentKey>> keyed;
  auto c = candidates.find(job.ref.stage_digest);
  if (c != candidates.end()) {
    std::map<AgentKey, int> failures;
    for (const Statement* r : book.results(id)) {
      if (!std::get<JobResult>(r->body).ok) ++failures[r->author];
    }
    for (const auto& a : c->second) {
      Digest score = rendezvous_score(id, a);
      // Negate-by-complement so that sorting ascending puts the best score first.
      for (auto& b : score.bytes) b = static_cast<std::uint8_t>(~b);
      keyed.push_back({{failures[a], a != holder, score}, a});
    }
  }
  std::sort(keyed.begin(), keyed.end());
  Ranked ranked{holder, {}};
  for (auto& [k, a] : keyed) ranked.order.push_back(a);
  return (ranking_cache[id] = std::move(ranked)).order;
}

// A bound claim stands while its author is live here and has neither released it nor
// published a result for it. Our own claims stand while we run them.
bool Core::Impl::claim_standing(const Digest& job, const Statement& st) const {
  const auto& c = std::get<Claim>(st.body);
  if (st.author == config.key) {
    auto it = running.find(job);
    return it != running.end() && it->second.epoch == c.epoch;
  }
  if (!is_live(st.author)) return false;
  if (book.claim_binding(job, st) != ClaimBinding::kBound) return false;
  if (book.released(job, st.author, c.epoch) || book.has_result(job, st.author, c.epoch))
    return false;
  return true;
}

bool Core::Impl::any_standing_claim(const Digest& job) const {
  const JobStatements* js = ledger.job(job);
  if (js == nullptr) return false;
  // Own claims stand by our runs; others' only when bound.
  return std::any_of(js->claims.begin(), js->claims.end(),
                     [&](const Statement* st) { return claim_standing(job, *st); });
}

// Places of a stage taken here: runs, restored rows not yet decided, and runs being
// stopped (their process may still be alive).
int Core::Impl::running_of_stage(const Digest& stage_digest) const {
  int n = 0;
  for (const auto& [job, run] : running) n += run.ref.stage_digest == stage_digest ? 1 : 0;
  for (const auto& [job, row] : restored) n += row.job.stage_digest == stage_digest ? 1 : 0;
  for (const auto& [job, row] : stopping) n += row.job.stage_digest == stage_digest ? 1 : 0;
  return n;
}

void Core::Impl::stop(const Digest& job, const std::string& reason, bool release) {
  auto it = running.find(job);
  if (it == running.end()) return;
  Run run = std::move(it->second);
  running.erase(it);
  touch(job);
  // A run that never started has no process, unless it was resumed from a restored row.
  if (run.executing || run.restored) kill(run.ref, run.epoch, reason);
  event(EventKind::kFenced, EventLevel::kInfo,
        "stopped job " + job.short_hex() + " epoch " + std::to_string(run.epoch) + ": " + reason);
  if (release && book.is_open(job, run.epoch)) {
    publish(Release{run.ref, run.epoch, reason});
  }
}

void Core::Impl::kill(const JobRef& ref, std::uint32_t epoch, const std::string& reason) {
  auto [it, inserted] = stopping.try_emplace(ref.job, OwnRun{ref, epoch, /*stopping=*/true});
  VOW_ASSERT(inserted, "job %s: epoch %u killed while epoch %u is still stopping",
             ref.job.short_hex().c_str(), epoch, it->second.epoch);
  out.actions.push_back(KillJob{ref.job, epoch, reason});
}

bool Core::Impl::stopped(const Digest& job, std::uint32_t epoch) {
  auto it = stopping.find(job);
  if (it == stopping.end() || it->second.epoch != epoch) return false;
  stopping.erase(it);
  return true;
}

void Core::Impl::drop_restored(const Digest& job, const std::string& reason) {
  auto it = restored.find(job);
  if (it == restored.end()) return;
  OwnRun row = std::move(it->second);
  restored.erase(it);
  touch(job);
  kill(row.job, row.epoch, "not resumable after restart: " + reason);
  event(EventKind::kFenced, EventLevel::kInfo,
        "job " + job.short_hex() + " epoch " + std::to_string(row.epoch) +
            " left from before the restart not resumed: " + reason);
  if (book.is_open(job, row.epoch)) publish(Release{row.job, row.epoch, "not resumed"});
}

// Restored rows whose claim closed since (a result or release of it arrived, such as our
// own statements relayed back after the restart lost them): nothing to resume.
void Core::Impl::reconcile_restored() {
  std::vector<Digest> closed;
  for (const auto& [job, row] : restored) {
    if (!book.is_open(job, row.epoch)) closed.push_back(job);
  }
  for (const auto& job : closed) drop_restored(job, "its claim is closed");
}

// Fencing of the jobs we run, by bound statements only: a higher epoch, any successful
// result (or a failure at our epoch or above by another agent), a better-ranked claim at
// our epoch, the job no longer planned, or our own claim no longer bound (the claim it
// superseded turned out to be an equivocator's).
void Core::Impl::reconcile_running() {
  std::vector<std::pair<Digest, std::string>> to_stop;
  std::vector<Digest> fenced_by_epoch;
  for (const auto& [job, run] : running) {
    std::string why;
    bool by_epoch = false;
    if (!run.regenerate && book.canonical(job) != nullptr) why = "a result exists";
    if (why.empty() && plan->find(job) == nullptr) why = "superseded";
    if (why.empty()) {
      for (const Statement* st : book.claims(job)) {
        const auto& c = std::get<Claim>(st->body);
        if (st->author == config.key) continue;
        if (c.epoch > run.epoch) {
          why = "fenced by epoch " + std::to_string(c.epoch);
          by_epoch = true;
        }
        if (c.epoch == run.epoch && ClaimBook::outranks(job, st->author, config.key) &&
            !book.released(job, st->author, c.epoch)) {
          why = "lost the tie-break at epoch " + std::to_string(c.epoch);
        }
      }
      for (const Statement* st : book.results(job)) {
        const auto& r = std::get<JobResult>(st->body);
        if (st->author != config.key && !r.ok && r.epoch >= run.epoch)
          why = "another attempt failed";
      }
    }
    if (why.empty() && !own_claim_bound(job, run.epoch)) why = "own claim not bound";
    if (!why.empty()) to_stop.emplace_back(job, why);
    if (by_epoch) fenced_by_epoch.push_back(job);
  }
  for (const auto& [job, why] : to_stop) stop(job, why, /*release=*/true);
  // A job fenced here by a higher epoch again is not claimed again at once: when the
  // fencing claims do not stand (their author is not live), claiming and being fenced
  // would loop. The first fence is an ordinary takeover (no wait); from the second on,
  // back off, doubling per fence of the job, capped.
  for (const Digest& job : fenced_by_epoch) {
    JobLocal& loc = local[job];
    if (++loc.fences < 2) continue;
    std::int64_t backoff = kFenceBackoffBaseMs;
    for (int i = 2; i < loc.fences && backoff < kFenceBackoffMaxMs; ++i) backoff *= 2;
    loc.not_before_ms = std::max(loc.not_before_ms, now_ms + std::min(backoff, kFenceBackoffMaxMs));
  }
}

bool Core::Impl::own_claim_bound(const Digest& job, std::uint32_t epoch) const {
  const JobStatements* js = ledger.job(job);
  if (js == nullptr) return false;
  for (const Statement* st : js->claims) {
    if (st->author == config.key && std::get<Claim>(st->body).epoch == epoch) {
      return book.claim_binding(job, *st) == ClaimBinding::kBound;
    }
  }
  return false;
}

// Two claims at one epoch: the better-ranked keeps it, the other publishes a release,
// even when it has already finished (so at most one claim per epoch is kept).
void Core::Impl::reconcile_tie_breaks() {
  std::set<Digest> jobs = std::move(tie_break_check);
  tie_break_check.clear();
  for (const Digest& job : jobs) {
    const JobStatements* js = ledger.job(job);
    if (js == nullptr) continue;
    std::vector<std::pair<JobRef, std::uint32_t>> lose;
    for (const Statement* own : js->claims) {
      if (own->author != config.key) continue;
      const auto& c = std::get<Claim>(own->body);
      if (book.released(job, config.key, c.epoch) || book.is_open(job, c.epoch)) continue;
      for (const Statement* st : book.claims(job)) {
        if (st->author != config.key && std::get<Claim>(st->body).epoch == c.epoch &&
            ClaimBook::outranks(job, st->author, config.key)) {
          lose.emplace_back(c.job, c.epoch);
          break;
        }
      }
    }
    for (const auto& [ref, epoch] : lose) publish(Release{ref, epoch, "lost the tie-break"});
  }
}

// Own claims not being run (after a restart, or ones we stopped without a release):
// resume the ones that still stand, release the others. A claim with a restored row
// (the shell may still have its process) is decided once synced, or, when no peer
// answers within kRestoreSyncWindowMs, on what this agent knows: a lone agent keeps its
// work (the cost of a takeover it could not hear of is one duplicate run, fenced when
// the other result arrives).
void Core::Impl::reconcile_open_claims() {
  std::vector<std::pair<Digest, std::uint32_t>> open(book.open().begin(), book.open().end());
  for (const auto& [job, epoch] : open) {
    auto r = running.find(job);
    if (r != running.end() && r->second.epoch == epoch) continue;
    const JobStatements* js = ledger.job(job);
    const Statement* mine = nullptr;
    std::string why;
    for (const Statement* st : js->claims) {
      const auto& c = std::get<Claim>(st->body);
      if (st->author == config.key && c.epoch == epoch) mine = st;
    }
    for (const Statement* st : book.claims(job)) {
      const auto& c = std::get<Claim>(st->body);
      if (c.epoch > epoch) why = "a higher epoch exists";
      if (st->author != config.key && c.epoch == epoch &&
          ClaimBook::outranks(job, st->author, config.key)) {
        why = "lost the tie-break";
      }
    }
    if (why.empty() && !own_claim_bound(job, epoch)) why = "own claim not bound";
    for (const Statement* st : book.results(job)) {
      const auto& res = std::get<JobResult>(st->body);
      if (res.ok || res.epoch >= epoch) why = res.ok ? "a result exists" : "another attempt failed";
    }
    const PlannedJob* planned = plan->find(job);
    if (planned == nullptr) why = "superseded";
    if (r != running.end()) why = "running at epoch " + std::to_string(r->second.epoch);
    if (withdrawn) why = "withdrawn";
    VOW_ASSERT(mine != nullptr, "open claim without its statement");
    auto row = restored.find(job);
    bool has_row = row != restored.end() && row->second.epoch == epoch;
    if (has_row && !synced && why.empty() && now_ms - started_ms < kRestoreSyncWindowMs) {
      wake_at(started_ms + kRestoreSyncWindowMs);
      continue;
    }
    bool stands = why.empty();
    if (!has_row && stands && !(synced || now_ms - started_ms >= members.detection_window_ms())) {
      continue;
    }
    if (!stands) {
      if (has_row) {
        drop_restored(job, why);
      } else {
        publish(Release{std::get<Claim>(mine->body).job, epoch, "not resumed"});
      }
      continue;
    }
    if (has_row) restored.erase(row);
    touch(job);
    Run run;
    run.ref = std::get<Claim>(mine->body).job;
    run.epoch = epoch;
    run.restored = has_row;
    running[job] = std::move(run);
    event(EventKind::kClaimed, EventLevel::kInfo,
          "resumed job " + job.short_hex() + " epoch " + std::to_string(epoch));
    progress_fetches(running[job], *planned);
  }
}

// Result bookkeeping seen from here: retries with backoff, failure past retries.
void Core::Impl::check_results(const Digest& job, const PlannedJob* planned) {
  int failures = book.failed_attempts(job);
  JobLocal& loc = local[job];
  if (failures > loc.failures_seen) {
    loc.failures_seen = failures;
    touch(job);  // its ranking moves the failed candidates back
    if (book.canonical(job) == nullptr) {
      int retries = planned ? planned->retries : 0;
      if (failures > retries) {
        if (!loc.failed_reported) {
          loc.failed_reported = true;
          event(EventKind::kFailed, EventLevel::kError,
                "job " + job.short_hex() + " failed " + std::to_string(failures) +
                    " times (retries " + std::to_string(retries) + "): dependents blocked");
        }
      } else {
        std::int64_t backoff = kRetryBackoffBaseMs;
        for (int i = 1; i < failures && backoff < kRetryBackoffMaxMs; ++i) backoff *= 2;
        backoff = std::min(backoff, kRetryBackoffMaxMs);
        loc.not_before_ms = now_ms + backoff;
        event(EventKind::kRetry, EventLevel::kInfo,
              "job " + job.short_hex() + " failed (attempt " + std::to_string(failures) +
                  "), retry after " + std::to_string(backoff) + " ms");
      }
    } else {
      // A failed re-run of a done job (its lost output being made again): run it again
      // later, backing off like a retry, so that a job that no longer succeeds costs one
      // run per kRetryBackoffMaxMs at most, and a flaky one still recovers the output.
      std::int64_t backoff = kRetryBackoffBaseMs;
      for (int i = 1; i < failures && backoff < kRetryBackoffMaxMs; ++i) backoff *= 2;
      loc.not_before_ms = now_ms + std::min(backoff, kRetryBackoffMaxMs);
    }
  }
}

// ---- backlogs ----

void Core::Impl::place_in_backlog(std::size_t place) {
  if (std::set<std::size_t>* b = backlog_of[place]) {
    b->erase(place);
    backlog_of[place] = nullptr;
  }
  held_places.erase(place);
  const PlannedJob& job = *open_jobs[place];
  const Digest& id = job.ref.job;
  if (book.canonical(id) != nullptr || book.failed_for_good(id, job.retries)) return;
  if (any_standing_claim(id)) {
    // Claimable again later counts from then (claim steps, patience).
    if (auto l = local.find(id); l != local.end()) l->second.claimable_since_ms = -1;
    held_places.insert(place);
    return;
  }
  std::set<std::size_t>& b = backlogs[{job.ref.stage_digest, owner_of(job)}];
  b.insert(place);
  backlog_of[place] = &b;
}

// The owner: the best-ranked candidate, live or not (this agent when no candidate is
// known). Who owns a job does not change when a peer dies or comes back, so neither
// moves a backlog (at 100,000 jobs each peer suspected moved a third of them between
// owners and back); a dead owner's backlog is taken by the others from the back.
AgentKey Core::Impl::owner_of(const PlannedJob& job) {
  const std::vector<AgentKey>& order = ranking(job);
  return order.empty() ? config.key : order.front();
}

// Who is live changed from `before` to `now` (both sorted). Owners do not depend on it
// (owner_of); a claim stands only while its author is live: the jobs held by a claim
// (one that left no longer holds), and the claims of the agents back (they hold again),
// are looked at again, not every open job.
void Core::Impl::on_live_change(const std::vector<AgentKey>& before,
                                const std::vector<AgentKey>& now) {
  std::vector<AgentKey> came;
  std::set_difference(now.begin(), now.end(), before.begin(), before.end(),
                      std::back_inserter(came));
  std::vector<std::size_t> again(held_places.begin(), held_places.end());
  for (const AgentKey& a : came) {
    ledger.for_each_of(a, [&](const Statement& st) {
      if (const auto* c = std::get_if<Claim>(&st.body)) {
        if (auto it = open_place.find(c->job.job); it != open_place.end()) {
          again.push_back(it->second);
        }
      }
    });
  }
  for (std::size_t place : again) place_in_backlog(place);
}

void Core::Impl::refresh_backlogs() {
  rebuild_candidates();  // marks the backlogs dirty if the candidates changed
  std::vector<AgentKey> live;
  for (const auto& [key, p] : members.peers()) {
    if (is_live(key)) live.push_back(key);
  }
  if (live != backlog_live) {
    if (!backlog_dirty) on_live_change(backlog_live, live);
    backlog_live = std::move(live);
  }
  if (backlog_dirty) {
    backlogs.clear();
    backlog_of.assign(open_jobs.size(), nullptr);
    held_places.clear();
    backlog_touched.clear();
    backlog_dirty = false;
    for (std::size_t i = 0; i < open_jobs.size(); ++i) place_in_backlog(i);
    return;
  }
  std::set<Digest> touched = std::move(backlog_touched);
  backlog_touched.clear();
  for (const Digest& id : touched) {
    auto it = open_place.find(id);
    if (it != open_place.end()) place_in_backlog(it->second);
  }
  std::erase_if(backlogs, [](const auto& kv) { return kv.second.empty(); });
}

bool Core::Impl::backlogs_consistent() {
  auto kept = backlogs;
  std::erase_if(kept, [](const auto& kv) { return kv.second.empty(); });
  backlog_dirty = true;
  refresh_backlogs();
  return kept == backlogs;
}

void Core::Impl::claim_open_jobs() {
  // A job's owner is its best-ranked candidate. Every agent holds the same plan and
  // rankings, so each knows every owner's backlog (its open, unclaimed jobs of one
  // stage, in plan order) and the place of each job in it. An owner takes its backlog
  // from the front; another agent only from the back, and never a live owner's first
  // `reserve` jobs (its free places as last heard, at least one), unless a job has been
  // claimable for kStealPatienceMs: a busy owner's stale "full" then races a thief only
  // for a backlog's last job, instead of for every job.
  // Before a sync, hold back for a detection window: a claim we have not heard of yet
  // may stand (consider_claim holds back too; this spares the walk).
  bool holding = withdrawn || catching_up() ||
                 (!synced && now_ms - started_ms < members.detection_window_ms());
  // While holding back nothing is claimed, and while catching up nearly every job a
  // pull touches is done by the time it ends: the backlogs are brought up to date once
  // the agent may claim (placing each touched job again as results arrived cost a fifth
  // of a catch-up at 30,000 jobs). Patience for others' backlogs counts from then too.
  if (holding) {
    if (catching_up()) wake_at(now_ms + kPullAnswerWindowMs);
    return;
  }
  refresh_backlogs();
  if (config.check_backlogs) {
    VOW_ASSERT(backlogs_consistent(), "claim backlogs differ from a rebuild");
  }
  for (const auto& [stage, cap] : capacity_by_stage) {
    auto full = [&, cap = cap, stage = stage] { return running_of_stage(stage) >= cap; };
    // Jobs looked at per backlog and pass, past the ones claimed: a bound on the walk
    // when the jobs at the front wait (retry backoff, claim steps).
    const std::size_t budget = static_cast<std::size_t>(std::max(cap, 0)) + kBacklogLookahead;
    auto first = backlogs.lower_bound({stage, AgentKey{}});
    // This agent's own backlog, front to back.
    if (auto own = backlogs.find({stage, config.key}); own != backlogs.end()) {
      std::size_t looked = 0;
      for (std::size_t place : own->second) {
        if (full() || ++looked > budget) break;
        consider_claim(*open_jobs[place], /*regenerate=*/false);
      }
    }
    // Others' backlogs: their reserve is counted as claimable here (for patience), and
    // the rest taken from the back.
    for (auto it = first; it != backlogs.end() && it->first.first == stage; ++it) {
      const AgentKey& owner = it->first.second;
      if (owner == config.key) continue;
      const std::set<std::size_t>& jobs = it->second;
      // A dead owner keeps nothing back: its backlog is taken from the back at once (the
      // claim steps order the others; an owner only suspected keeps taking its front).
      const Membership::Peer* p = members.find(owner);
      std::size_t free = p != nullptr && p->capacity > p->running ? p->capacity - p->running : 0;
      std::size_t reserve = is_live(owner) ? std::max<std::size_t>(1, free) : 0;
      std::size_t n = 0;
      for (auto j = jobs.begin(); j != jobs.end() && n < reserve; ++j, ++n) {
        JobLocal& loc = local[open_jobs[*j]->ref.job];
        if (loc.claimable_since_ms < 0) loc.claimable_since_ms = now_ms;
        if (now_ms - loc.claimable_since_ms < kStealPatienceMs) {
          wake_at(loc.claimable_since_ms + kStealPatienceMs);
        }
      }
      std::size_t looked = 0;
      std::size_t place = jobs.size();
      for (auto j = jobs.rbegin(); j != jobs.rend(); ++j) {
        --place;
        if (full() || ++looked > budget) break;
        const PlannedJob& job = *open_jobs[*j];
        if (place < reserve) {
          const JobLocal& loc = local[job.ref.job];
          if (now_ms - loc.claimable_since_ms < kStealPatienceMs) continue;
        }
        consider_claim(job, /*regenerate=*/false);
      }
    }
  }
}

void Core::Impl::consider_claim(const PlannedJob& job, bool regenerate) {
  const Digest& id = job.ref.job;
  JobLocal& loc = local[id];
  if (any_standing_claim(id)) {
    loc.claimable_since_ms = -1;
    return;
  }
  if (loc.claimable_since_ms < 0) loc.claimable_since_ms = now_ms;
  if (withdrawn) return;
  if (now_ms < loc.not_before_ms) {
    wake_at(loc.not_before_ms);
    return;
  }
  // Before a sync, hold back for a detection window: a claim we have not heard of yet
  // may stand. While catching up, the job's result may be among what is still missing.
  if (!synced && now_ms - started_ms < members.detection_window_ms()) return;
  if (catching_up()) {
    wake_at(now_ms + kPullAnswerWindowMs);
    return;
  }
  auto cap = capacity_by_stage.find(job.ref.stage_digest);
  if (cap == capacity_by_stage.end() || running_of_stage(job.ref.stage_digest) >= cap->second) {
    return;
  }
  if (running.count(id) || restored.count(id)) return;
  // Effective rank: better-ranked candidates that are live and not full.
  int effective_rank = 0;
  for (const AgentKey& a : ranking(job)) {
    if (a == config.key) break;
    if (is_live(a) && !members.full(a)) ++effective_rank;
  }
  // Claim steps count from when the job became claimable here, or from the end of its
  // retry backoff, whichever is later.
  std::int64_t since = std::max(loc.claimable_since_ms, loc.not_before_ms);
  if (now_ms - since < effective_rank * config.timing.claim_step_ms) {
    wake_at(since + effective_rank * config.timing.claim_step_ms);
    return;
  }
  claim(job, regenerate);
}

void Core::Impl::claim(const PlannedJob& job, bool regenerate) {
  const Digest& id = job.ref.job;
  if (book.max_epoch(id) >= kMaxEpoch) {
    // Unreachable by bound claims in practice (4 billion earned epochs): never wrap.
    if (!local[id].epochs_exhausted) {
      local[id].epochs_exhausted = true;
      event(EventKind::kFailed, EventLevel::kError,
            "job " + id.short_hex() + " has used every epoch; not claimed again");
    }
    return;
  }
  std::uint32_t epoch = book.max_epoch(id) + 1;
  std::optional<StatementRef> supersedes;
  if (const Statement* top = book.top_claim(id)) supersedes = StatementRef{top->author, top->seq};
  Run run;
  run.ref = job.ref;
  run.epoch = epoch;
  run.regenerate = regenerate;
  running[id] = std::move(run);
  publish(Claim{job.ref, epoch, config.expected_duration_ms, supersedes});
  event(regenerate ? EventKind::kRegenerate : EventKind::kClaimed, EventLevel::kInfo,
        std::string(regenerate ? "regenerating" : "claimed") + " job " + id.short_hex() + " (" +
            job.ref.pipeline + "/" + job.ref.stage +
            (job.ref.shard.empty() ? "" : "[" + printable(job.ref.shard, 128) + "]") +
            ") epoch " +
            std::to_string(epoch));
  local[id].claimable_since_ms = -1;
  if (auto old = stopping.find(id); old != stopping.end()) {
    event(EventKind::kClaimed, EventLevel::kInfo,
          "job " + id.short_hex() + " epoch " + std::to_string(epoch) + " starts once epoch " +
              std::to_string(old->second.epoch) + " has stopped");
  }
  progress_fetches(running[id], job);
}

// Fetches missing inputs (each from its live holders, producer first); when every
// input is here, starts the run.
void Core::Impl::progress_fetches(Run& run, const PlannedJob& job) {
  if (run.executing) return;
  bool all_here = true;
  for (const auto& in : job.inputs) {
    if (holdings.available(in.artifact)) continue;
    all_here = false;
    std::vector<Digest> wanted;
    auto holders = live_holders(in.artifact.digest);
    if (!holders.empty() || in.artifact.entries.empty()) {
      wanted.push_back(in.artifact.digest);
    } else {
      for (const auto& e : in.artifact.entries) {
        if (!holdings.holds(e.digest)) wanted.push_back(e.digest);
      }
    }
    for (const auto& d : wanted) {
      auto [it, inserted] = run.fetch_retry_ms.try_emplace(d, 0);
      if (it->second < 0 || now_ms < it->second) continue;  // in flight, or waiting
      auto who = live_holders(d);
      if (who.empty()) continue;  // nobody has it: regeneration will bring it back
      if (who.size() > kMaxFetchCandidates) who.resize(kMaxFetchCandidates);
      it->second = -1;
      out.actions.push_back(FetchArtifact{d, std::move(who)});
    }
  }
  if (!all_here) return;
  // A process of another epoch of this job may still be alive: start once it is gone.
  if (stopping.count(job.ref.job) || restored.count(job.ref.job)) return;
  // No statement here: the result names where each input came from (an Accept made
  // before the start cost every agent a statement per job and this one a sync before
  // the process could start).
  run.executing = true;
  StartJob start;
  start.job = job.ref;
  start.epoch = run.epoch;
  start.inputs = job.inputs;
  start.stage = *job.stage;
  start.timeout_ms = job.timeout_ms;
  start.regenerate = run.regenerate;
  out.actions.push_back(std::move(start));
  event(EventKind::kStarted, EventLevel::kInfo,
        "started job " + job.ref.job.short_hex() + " epoch " + std::to_string(run.epoch));
}

void Core::Impl::finish(const Digest& job, std::uint32_t epoch, JobOutcome outcome) {
  auto it = running.find(job);
  if (it == running.end() || it->second.epoch != epoch || !it->second.executing) return;
  Run run = std::move(it->second);
  running.erase(it);
  touch(job);
  const PlannedJob* planned = plan ? plan->find(job) : nullptr;
  JobResult r;
  r.job = run.ref;
  r.epoch = epoch;
  if (planned != nullptr) {
    r.inputs = planned->inputs;
    // A fan-in of more entries than a statement may list (peers would refuse the
    // result) names none: `vow lineage` finds their producers by digest.
    if (planned->bindings.size() <= kMaxNamedArtifacts) r.bindings = planned->bindings;
  }
  r.ok = outcome.ok;
  if (outcome.ok) r.outputs = std::move(outcome.outputs);
  r.exit_status = outcome.exit_status;
  r.error = truncated(std::move(outcome.error));
  r.started_unix_ms = outcome.started_unix_ms;
  r.ended_unix_ms = outcome.ended_unix_ms;
  r.stdout_digest = outcome.stdout_digest;
  r.stderr_digest = outcome.stderr_digest;
  if (r.ok) {
    for (const auto& o : r.outputs) {
      holdings.add(o.artifact.digest);
      for (const auto& e : o.artifact.entries) holdings.add(e.digest);
    }
    holdings.changed();
  }
  std::string text = "job " + job.short_hex() + " epoch " + std::to_string(epoch) +
                     (r.ok ? " succeeded" : " failed: " + printable(r.error, 512));
  publish(std::move(r));
  event(EventKind::kResult, EventLevel::kInfo, std::move(text));
}

void Core::Impl::reconcile() {
  if (!started) return;
  wake_ms = std::numeric_limits<std::int64_t>::max();
  // A peer's death changes which claims stand and who ranks first.
  if (auto t = members.next_deadline(now_ms)) wake_at(*t);
  if (!synced) wake_at(started_ms + members.detection_window_ms());
  ensure_plan();
  reconcile_running();
  reconcile_restored();
  reconcile_open_claims();
  reconcile_tie_breaks();
  // The plan may have changed with what we just published.
  ensure_plan();
  for (auto it = results_changed.begin(); it != results_changed.end();) {
    const PlannedJob* job = plan->find(*it);
    // A job not planned here has no retries to count (failed_for_good still reads the
    // ledger, so its state is right either way).
    if (job != nullptr) check_results(*it, job);
    it = results_changed.erase(it);
  }
  claim_open_jobs();
  const std::set<Digest>& regen = replication.regen_wanted();
  for (const Digest& id : std::vector<Digest>(regen.begin(), regen.end())) {
    const PlannedJob* job = plan->find(id);
    if (job != nullptr && replication.needs_regeneration(id, now_ms, out)) {
      consider_claim(*job, /*regenerate=*/true);
    }
  }
  for (auto& [id, run] : running) {
    if (const PlannedJob* job = plan->find(id)) progress_fetches(run, *job);
  }
  if (replication.due(now_ms)) {
    holdings.prune(now_ms);
    replication.check(*plan, capacity_by_stage, holdings.take_touched(), now_ms, out);
  }
  wake_at(replication.next_check_ms());
  // The safety net: fetch retries and other small waits are seen by then.
  wake_at(now_ms + config.timing.heartbeat_ms);
}

}  // namespace vow::promises
