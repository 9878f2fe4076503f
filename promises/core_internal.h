// Core::Impl: the coordination core of one agent, as modules with one job each, owned
// here and built in this order (later ones borrow earlier ones):
//   Membership   (membership.h)   peers, their load and liveness (the injected detector)
//   ClaimBook    (claim_book.h)   the ledger's claims and results per job, the tie-break
//   Holdings     (holdings.h)     who holds which artifact
//   Replication  (replication.h)  copies to `replicas` holders, regeneration
// and the rules that tie them to this agent's runs, split over
//   core.cc      inputs, ledger ingest, publishing, sync messages, heartbeats
//   claims.cc    per-job decisions: claims, fencing, tie-breaks, fetch, start, results,
//                kills and restored runs
//   admission.cc which peers' statements are kept (limits and budgets, rule 6)
//   views.cc     read-only queries
// Private to promises/. Not thread-safe (owned by one Core).
#pragma once

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "promises/claim_book.h"
#include "promises/core.h"
#include "promises/holdings.h"
#include "promises/limits.h"
#include "promises/membership.h"
#include "promises/replication.h"

namespace vow::promises {

// The job index behind the status queries (views.cc): each job's state and what it adds
// to the counts, looked at again only when something it reads changed. A job's view
// reads its own statements (marked by ingest), own runs, the plan, peers' liveness and
// the equivocators; refresh_job_index() compares the last three with what it saw last
// and looks at every job again when one changed.
struct JobIndex {
  struct Entry {
    JobRef ref;
    JobState state = JobState::kReady;
    bool nondeterministic = false;
    // Its claims and results that do not count, by binding_report() reason.
    std::vector<std::pair<std::string, std::uint32_t>> unbound;
    // Peers with a claim of it while it is ready or running: their liveness decides
    // whether it runs (Core::Impl::claim_standing).
    std::vector<AgentKey> claimants;
  };
  std::map<Digest, Entry> entries;  // every job of the plan and the ledger
  std::set<Digest> dirty;           // jobs whose statements changed since the last refresh
  bool all_dirty = true;
  bool sources_dirty = true;       // a source version arrived: count their bindings again
  std::vector<std::pair<AgentKey, std::uint64_t>> source_versions;  // every one held
  std::weak_ptr<const int> plan;   // Plan::identity of the plan last read
  // Own runs as last read: job -> (0 running, 1 restored, 2 stopping; epoch).
  std::map<Digest, std::pair<int, std::uint32_t>> own_runs;
  std::map<AgentKey, bool> live;   // peers' liveness as last read
  // Jobs ready or running by the peers that claim them (Entry::claimants): what a
  // change of that peer's liveness looks at again, not every job.
  std::map<AgentKey, std::set<Digest>> claimed_open;
  std::size_t equivocators = 0;
  std::map<StageKey, JobCounts> counts;
  std::map<std::string, std::uint64_t> job_unbound;     // claims and results
  std::map<std::string, std::uint64_t> source_unbound;  // source versions
  BindingReport binding;  // the summary handed out
  // The next job to look at again unasked (CoreConfig::job_index_scrub per refresh: a
  // bound on how long any state missed by the marks above could stay stale).
  Digest scrub_cursor;
  std::uint64_t looked_at = 0;  // index_job calls (Core::jobs_indexed)
  void note(const Statement& st);
};

struct Core::Impl {
  Impl(CoreConfig config, std::int64_t now_ms);

  // ---- state ----
  CoreConfig config;
  Ledger ledger;
  Membership members;
  ClaimBook book;
  Holdings holdings;
  Replication replication;
  std::int64_t now_ms = 0;
  std::int64_t wall_unix_ms = 0;
  std::int64_t started_ms = 0;
  std::uint64_t last_seq = 0;
  bool started = false;
  bool withdrawn = false;
  bool synced = false;         // caught up with at least one peer since start
  bool decisions_due = false;  // new statements arrived: decide on the next tick
  Output out;                  // being built for the current input

  std::map<Digest, int> capacity_by_stage;  // own promises by stage digest
  // Rebuilds own pipelines and capacities from config (start and reconfigure).
  void apply_promises();
  // Publishes the advert and the definitions of pipelines the ledger lacks.
  void publish_advert_and_pipelines();
  std::uint32_t total_capacity = 0;

  // Candidates per stage digest, from the latest adverts (rebuilt when they change),
  // and the order of candidates per job (cache): the holder of its inputs first, then
  // rendezvous order (ranking()).
  bool candidates_dirty = true;
  std::map<Digest, std::vector<AgentKey>> candidates;
  struct Ranked {
    std::optional<AgentKey> holder;  // input_holder() when ranked
    std::vector<AgentKey> order;
  };
  std::map<Digest, Ranked> ranking_cache;

  std::unique_ptr<Plan> plan;
  PlanBasis plan_basis;  // what the plan read of adverts and sources (planner.h)
  bool plan_dirty = true;
  // Why the plan is to be made again (the first cause since it was last made), and how
  // many plans were made for each cause (Core::plans_made).
  const char* replan_reason = "start";
  std::map<std::string, std::uint64_t> plans_made;
  std::uint64_t plans_total = 0;  // the sum of plans_made
  Plan plan_now();  // what the ledger plans now (ensure_plan installs it)
  void replan(const char* why) {
    if (!plan_dirty) replan_reason = why;
    plan_dirty = true;
  }
  // Planned jobs of our stages without a canonical result when the plan was made, in
  // plan order (rebuilt with the plan), and the place of each.
  std::vector<const PlannedJob*> open_jobs;
  std::unordered_map<Digest, std::size_t> open_place;
  // Backlogs (claims.cc): the claimable open jobs (no canonical result, not failed for
  // good, no standing claim) by stage and owner (the best-ranked candidate), as
  // places in open_jobs. Kept up to date by the events that can change them: a
  // statement of a job, an own run that starts or stops (the job is touched and looked at
  // again), a change of who is live (the jobs whose claims stand or stand again), or a
  // new plan or new candidates (rebuilt). A decision pass reads the front of this agent's backlogs and the tails of others', so
  // it costs the free places, not the open jobs.
  using BacklogKey = std::pair<Digest, AgentKey>;  // (stage digest, owner)
  std::map<BacklogKey, std::set<std::size_t>> backlogs;
  std::vector<std::set<std::size_t>*> backlog_of;  // per place: its backlog, or null
  std::set<Digest> backlog_touched;
  bool backlog_dirty = true;
  std::vector<AgentKey> backlog_live;  // the live peers the backlogs were built with
  // Open places in no backlog because a claim stands on their job (it stands only while
  // its author is live: looked at again when who is live changes).
  std::set<std::size_t> held_places;
  // A job's statements or own run changed: its place in the backlogs is looked at again.
  void touch(const Digest& job) {
    if (!backlog_dirty) backlog_touched.insert(job);
  }
  // ... and its ranking too: the failed results bound to it may have changed (failures
  // move candidates back). Not on every statement: ranking each job a catch-up touches
  // again hashed every candidate for every job, a third of a catch-up at 30,000 jobs.
  void rerank(const Digest& job) {
    ranking_cache.erase(job);
    touch(job);
  }
  // Every planned job without a canonical result when the plan was made -> its stage's
  // index in plan->stages, and per stage how many of them are still open. A first
  // canonical result for a job whose stage keeps other open jobs cannot change the
  // plan (a stage's outputs exist for its consumers only once all its jobs are done),
  // so it does not trigger a re-plan: re-planning every job on every result made a
  // burst of N jobs cost O(N^2) (BENCHMARKS.md, job throughput).
  std::map<Digest, std::size_t> plan_open_stage;
  std::vector<std::size_t> plan_open_count;
  std::vector<std::shared_ptr<const Pipeline>> own_pipelines;
  std::map<Digest, std::shared_ptr<const Pipeline>> decoded_pipelines;
  // The current definitions of the last plan, for the next (planner.h).
  DefinitionsCache definitions;

  std::set<Digest> results_changed;  // jobs with a new result: check retries / failure
  // Earliest time a time-driven decision may change (claim step, backoff end, a peer's
  // death, startup hold, the periodic replication check); ticks before it and without
  // new statements skip the decision pass.
  std::int64_t wake_ms = 0;
  void wake_at(std::int64_t t) {
    if (t > now_ms && t < wake_ms) wake_ms = t;
  }

  struct JobLocal {
    std::int64_t claimable_since_ms = -1;  // -1: not claimable (a claim stands)
    std::int64_t not_before_ms = 0;        // retry backoff
    int failures_seen = 0;
    bool failed_reported = false;
    int fences = 0;  // times our claim was fenced by a higher epoch (backoff)
    bool epochs_exhausted = false;
  };
  std::map<Digest, JobLocal> local;

  struct Run {
    JobRef ref;
    std::uint32_t epoch = 0;
    bool regenerate = false;
    bool executing = false;  // StartJob emitted
    bool restored = false;   // resumed from a restored row: the shell may have its process
    std::map<Digest, std::int64_t> fetch_retry_ms;  // digest -> next attempt (-1 in flight)
  };
  std::map<Digest, Run> running;
  // Restored rows (RestoredState::running) whose claim may still stand: each waits for a
  // sync to be resumed (a Run with `restored`) or killed, at most kRestoreSyncWindowMs.
  std::map<Digest, OwnRun> restored;
  // Runs a KillJob was sent for, until job_stopped: they hold their place of the stage's
  // capacity, and no later epoch of the job starts meanwhile. At most one per job (a
  // later epoch cannot start, so it cannot be killed, while one is here).
  std::map<Digest, OwnRun> stopping;
  std::set<Digest> tie_break_check;  // jobs with a new claim: does an own claim lose?

  std::set<Digest> nondet;
  std::set<std::string> reported_conflicts;  // definition conflicts logged (core.cc)

  std::int64_t next_sync_ms = 0;
  std::size_t sync_rotor = 0;
  std::set<AgentKey> pulling;  // peers a catch-up pulls from (continue_pull)
  // The last unasked request (a hello or heartbeat showed the peer holds more): while
  // its answer is awaited (kPullAnswerWindowMs, the peer live), no other goes out.
  std::optional<AgentKey> unasked_peer;
  std::int64_t unasked_ms = -1'000'000;
  bool unasked_pending() const;
  void request_unasked(const AgentKey& peer, Membership::Peer& p);
  // A pull is under way: a full answer that brought news was followed by a request
  // still within kPullAnswerWindowMs; or, within that window, a peer's heartbeat showed
  // it far ahead (more than half an answer) and an answer to this agent's request
  // brought news (two pulls answering the same request make one of them look empty and
  // end; the agent is still behind). This agent lacks at least that much of a peer's
  // ledger (the results of the jobs it would claim, maybe): it does not claim meanwhile.
  bool catching_up() const;
  // A peer pulled from was asked within kPullAnswerWindowMs (its answer is awaited).
  bool pull_active() const;
  std::int64_t far_behind_ms = -1'000'000;  // a heartbeat showed a peer far ahead
  std::uint64_t far_ahead_vv_sum = 0;       // that peer's vv_sum then
  // A hello or heartbeat from a peer that holds `vv_sum`: far ahead of this agent?
  void note_peer_vv_sum(std::uint64_t vv_sum) {
    if (vv_sum > ledger.vv_sum() + config.sync_answer_statements / 2) {
      far_behind_ms = now_ms;
      far_ahead_vv_sum = std::max(far_ahead_vv_sum, vv_sum);
    }
  }
  std::int64_t pull_news_ms = -1'000'000;   // an answer to our request brought news
  std::int64_t sync_budget_since_ms = -1'000'000;
  std::size_t sync_budget_used = 0;
  bool may_request_sync();
  void ask_have(const AgentKey& peer, Membership::Peer& p);
  // The last batch of an answer from FROM arrived; CUT: it left statements out.
  void continue_pull(const AgentKey& from, Membership::Peer& p, bool cut);
  // A batch of a peer that marks no answer (an earlier version) holds at least half
  // of what an answer may: taken as an answer that was cut.
  bool half_full(const StatementBatch& batch) const;
  // Horizons only (an answer's leading batch; not an empty one).
  static bool horizons_alone(const StatementBatch& batch);
  // SWIM profiles: the load last broadcast (running, capacity, holdings incarnation and
  // version) and when; a change is broadcast as one Heartbeat, at most every heartbeat_ms.
  std::optional<std::array<std::uint64_t, 4>> announced_load;
  std::int64_t announced_ms = -1'000'000;
  bool announce_again = false;
  std::int64_t next_have_check_ms = 0;
  // SWIM: peers told (by a heartbeat, a probe or a new advert) to hold a newer holdings
  // version than the one applied here: asked for a Have every heartbeat_ms until it is.
  std::set<AgentKey> have_wanted;
  // SWIM: peers that have not asked for this agent's current holdings version since it
  // was announced; the live ones get the load again every kHoldingsResendMs, at most
  // kMaxHoldingsResends at a time (do_tick).
  std::set<AgentKey> holdings_unasked;
  std::int64_t next_unasked_resend_ms = 0;
  static constexpr std::int64_t kHoldingsResendMs = 500;
  static constexpr std::size_t kMaxHoldingsResends = 32;

  // Rule 6 (admission.cc): per-author budgets of statements that do not count, the
  // refusals by reason, and when a refusal of each (author, reason) was last logged.
  std::map<AgentKey, IdleBudget> budgets;
  std::map<std::string, std::uint64_t> refused;
  std::map<std::pair<AgentKey, std::string>, std::int64_t> refusal_logged_ms;

  JobIndex job_index;  // views.cc

  // ---- horizon_step.cc: the ledger horizon (docs/storage.md) ----
  using StatementKey = std::pair<AgentKey, std::uint64_t>;
  // Horizon statements held (proposals and endorsements), by number.
  std::map<std::uint64_t, std::vector<const Statement*>> horizon_by_number;
  // The ledger's vv_sum() when this agent last computed a proposal of its own that
  // retired nothing (it waits for horizon_every / 2 more statements).
  std::uint64_t horizon_tried_at = 0;
  // Jobs may have become superseded since this agent last proposed or applied a horizon
  // that retires them: a plan made since dropped a job (or the agent started). Only then
  // does its proposal retire superseded jobs, which reads every job held.
  bool superseded_pending = true;
  // Per horizon number this agent computed with superseded jobs: whether some stayed for
  // the next one (superseded only since the last horizon's cut).
  std::map<std::uint64_t, bool> superseded_waiting;
  // Whether this agent's own computation of a proposal matched it (absent: not yet
  // computed, it lacks statements behind the cut).
  std::map<StatementKey, bool> horizon_verified;
  std::map<StatementKey, std::size_t> horizon_verified_proofs;  // proofs known then
  std::set<std::uint64_t> horizon_endorsed;  // numbers this agent endorsed or proposed
  // Entries (retired ranges, settled results, line bases) of the horizons applied since
  // the last checkpoint: a proposal is a checkpoint once they reach what it would list.
  std::uint64_t horizon_entries_since_checkpoint = 0;
  // The next in-force proposal of the chain: number horizon_number() + 1 following the
  // last applied, or a checkpoint further on (it needs none before it); nullptr if none.
  const Statement* next_in_force(bool verify);
  void note_horizon(const Statement& st);
  // Proposes, endorses and applies horizons as the ledger allows (each decision pass).
  void horizon_step();
  // Applies the next horizons of the chain that are in force, in order.
  void apply_horizons_in_force();
  // The agents with a current advert that do not equivocate.
  std::vector<AgentKey> horizon_members() const;
  // Whether this agent holds an advert of every agent it has heard from (a peer of its
  // membership that sent it a message): a horizon is neither proposed nor endorsed
  // before, so that agents split before each other's adverts arrived cannot each put a
  // different horizon of one number in force (docs/storage.md, "Agreement"). A peer
  // only configured, never heard (not started yet, or gone for good), does not hold
  // horizons up.
  bool knows_every_advert() const;
  // More than half of this agent and the peers its configuration names have been heard
  // from (a message of their own since this agent started).
  bool heard_from_most_configured() const;
  // Whether every member a proposal lists (but its proposer) endorsed it.
  bool horizon_in_force(const Statement& proposal,
                        const std::vector<const Statement*>& statements) const;
  void apply_horizon(const Statement& proposal);
  // After a restart: applies again the chain of horizons the ledger holds.
  void restore_horizons();

  // ---- views.cc ----
  // A job's view; with details = false, its ref, state and nondeterministic flag only
  // (no claim or result views: what the job index reads, a digest of each result's
  // outputs and two vectors per job less).
  std::optional<JobView> job_view(const Digest& id, bool details = true);
  void refresh_job_index();
  void index_job(const Digest& id);

  // ---- core.cc ----
  Output take();
  void event(EventKind kind, EventLevel level, std::string text,
             std::optional<AgentKey> peer = std::nullopt);
  const Statement& publish(StatementBody body);
  void sign_published(Output& out);
  // Own statements published by this input and not signed yet (CoreConfig::encode).
  std::vector<std::uint64_t> unsigned_seqs;
  // An output left with them unsigned (CoreConfig::sign_on_take false), not signed yet.
  bool signing_due = false;
  void ingest(const Statement& st, bool restored);
  void on_advert(const Statement& st);
  void report_conflicts();
  void receive(const Statement& st, bool proof = false);
  void receive_void(const VoidRange& range);
  void receive_proof(const Statement& first, const Statement& second);
  void on_equivocation(const AgentKey& author);
  // "Send me what I miss": this ledger's version vector, prefix digests and horizon.
  SyncRequest full_sync_request() const;
  // A full SyncRequest to PEER, noted in its row (Membership::Peer).
  void request_sync(const AgentKey& peer, Membership::Peer& p);
  // Whether a peer that shows VV_SUM may hold statements for this agent: not if an
  // answer of its that left nothing out came at that sum or above (it holds statements
  // this agent refused: authors it does not trust).
  static bool worth_asking(const Membership::Peer& p, std::uint64_t vv_sum) {
    return vv_sum > p.answered_vv_sum;
  }
  void answer_sync(const AgentKey& to, const VersionVector& have,
                   const std::map<AgentKey, Digest>& digests, std::uint64_t their_horizon);
  void note_nondeterminism(const Digest& job);
  void handle_message(const AgentKey& from, const Message& msg);
  void heard(const AgentKey& peer);
  void do_tick();
  Heartbeat load() const;  // what heartbeats and probes say of this agent
  void send(const std::optional<AgentKey>& to, MessageBody body);
  bool is_live(const AgentKey& agent) const { return members.is_live(agent, now_ms); }
  std::vector<AgentKey> live_holders(const Digest& digest) const {
    return holdings.live_holders(digest, now_ms);
  }

  // ---- admission.cc ----
  // Whether a peer's statement may be kept: within the field limits, and either counting
  // on arrival, paid for from its author's budget, or half of an equivocation proof
  // (`proof`: two statements of one (author, seq) in one batch; at most one proof per
  // author is kept). Counts and logs a refusal.
  bool admit(const Statement& st, bool proof);
  // Whether a statement not yet held would count if kept now (rules 1-5, read from what
  // the ledger holds; a statement judged idle here may still come to count later).
  bool counts_on_arrival(const Statement& st) const;
  void refuse(const Statement& st, const std::string& reason, const std::string& why);

  // ---- claims.cc ----
  void reconcile();
  void ensure_plan();
  void note_canonical_result(const Digest& job);
  void rebuild_candidates();
  const std::vector<AgentKey>& ranking(const PlannedJob& job);
  bool claim_standing(const Digest& job, const Statement& claim) const;
  bool any_standing_claim(const Digest& job) const;
  bool own_claim_bound(const Digest& job, std::uint32_t epoch) const;
  int running_of_stage(const Digest& stage_digest) const;
  void check_results(const Digest& job, const PlannedJob* planned);
  void reconcile_open_claims();
  void reconcile_running();
  void reconcile_tie_breaks();
  void consider_claim(const PlannedJob& job, bool regenerate);
  // Open jobs in two passes (docs/coordination.md, "Owners first, thieves from the
  // tail"): this agent's own (it is the best-ranked candidate) front to back, then
  // others' back to front, each only past the place its owner keeps for itself.
  void claim_open_jobs();
  // Brings the backlogs up to date (rebuilt, or the touched jobs looked at again).
  void refresh_backlogs();
  void place_in_backlog(std::size_t place);
  AgentKey owner_of(const PlannedJob& job);
  void on_live_change(const std::vector<AgentKey>& before, const std::vector<AgentKey>& now);
  // Whether the backlogs equal ones built from scratch (CoreConfig::check_backlogs).
  bool backlogs_consistent();
  void claim(const PlannedJob& job, bool regenerate);
  void stop(const Digest& job, const std::string& reason, bool release);
  // Emits the KillJob for a run that may have a process and keeps it stopping.
  void kill(const JobRef& ref, std::uint32_t epoch, const std::string& reason);
  // A stopping run is gone (job_stopped, or job_exited of it); false if none matches.
  bool stopped(const Digest& job, std::uint32_t epoch);
  // Kills a restored row not resumed, and releases its claim.
  void drop_restored(const Digest& job, const std::string& reason);
  void reconcile_restored();
  void progress_fetches(Run& run, const PlannedJob& job);
  void finish(const Digest& job, std::uint32_t epoch, JobOutcome outcome);
};

}  // namespace vow::promises
