// Core::Impl: the state and the rules of the coordination core, split over
//   core.cc         inputs, ledger ingest, publishing, membership and sync messages
//   claims.cc       per-job decisions: claims, fencing, tie-breaks, fetch, start, results
//   replication.cc  artifact holders, replication to `replicas`, regeneration
//   views.cc        read-only queries
// Private to promises/. Not thread-safe (owned by one Core).
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "promises/core.h"

namespace vow::promises {

struct Core::Impl {
  Impl(CoreConfig config, std::int64_t now_ms);

  // ---- state ----
  CoreConfig config;
  Ledger ledger;
  std::unique_ptr<FailureDetector> detector;
  std::int64_t now_ms = 0;
  std::int64_t wall_unix_ms = 0;
  std::int64_t started_ms = 0;
  std::uint64_t last_seq = 0;
  bool started = false;
  bool withdrawn = false;
  bool synced = false;         // caught up with at least one peer since start
  bool decisions_due = false;  // new statements arrived: decide on the next tick
  Output out;                  // being built for the current input

  std::set<Digest> held;
  std::uint64_t holdings_incarnation = 0;
  std::uint64_t holdings_version = 0;

  std::map<Digest, int> capacity_by_stage;  // own promises by stage digest
  // Rebuilds own pipelines and capacities from config (start and reconfigure).
  void apply_promises();
  // Publishes the advert and the definitions of pipelines the ledger lacks.
  void publish_advert_and_pipelines();
  std::uint32_t total_capacity = 0;

  struct Peer {
    std::string name;
    std::uint32_t running = 0;
    std::uint32_t capacity = 0;
    std::uint64_t vv_sum = 0;
    bool has_holdings = false;  // a Have arrived: `holdings` is authoritative
    std::pair<std::uint64_t, std::uint64_t> holdings_seen{0, 0};  // (incarnation, version)
    std::set<Digest> holdings;
    // Artifacts its statements (results, versions, accepts) named after its last Have,
    // with when we learned: holders too until a Have lists them or dead_after passes.
    // Without this, a fresh output waits a heartbeat and a Have round trip before
    // anyone fetches it. Pruned on each Have and by the replication check, so it holds
    // at most a detection window's worth of digests.
    std::map<Digest, std::int64_t> announced;
    Liveness reported = Liveness::kAlive;  // last liveness an event was logged for
    std::int64_t last_sync_request_ms = -1'000'000;
    std::int64_t last_have_request_ms = -1'000'000;
    std::uint64_t connect_sent_for_seq = 0;
    bool heard = false;  // anything ever arrived from it (else: dial its endpoints)
  };
  std::map<AgentKey, Peer> peers;

  // Candidates per stage digest, from the latest adverts (rebuilt when they change),
  // and the rendezvous order of candidates per job (cache).
  bool candidates_dirty = true;
  std::map<Digest, std::vector<AgentKey>> candidates;
  std::map<Digest, std::vector<AgentKey>> ranking_cache;

  std::unique_ptr<Plan> plan;
  bool plan_dirty = true;
  // Planned jobs of our stages without a canonical result (rebuilt with the plan).
  std::vector<const PlannedJob*> open_jobs;
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

  // Derived from a job's statements; dropped when one of them arrives.
  struct JobSummary {
    const Statement* canonical = nullptr;
    int failed_attempts = 0;
    std::uint32_t max_epoch = 0;
  };
  mutable std::map<Digest, JobSummary> summaries;
  const JobSummary& summary(const Digest& job) const;
  std::set<Digest> regen_wanted;     // done jobs whose output no live agent holds
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
    bool unrecoverable_reported = false;
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
  std::map<Digest, RunningJob> restored;
  // Runs a KillJob was sent for, until job_stopped: they hold their place of the stage's
  // capacity, and no later epoch of the job starts meanwhile. At most one per job (a
  // later epoch cannot start, so it cannot be killed, while one is here).
  std::map<Digest, RunningJob> stopping;
  std::set<std::pair<Digest, std::uint32_t>> open_claims;  // own, without result or release
  std::set<Digest> tie_break_check;  // jobs with a new claim: does an own claim lose?

  std::set<Digest> nondet;
  // Holders presumed from the ledger (result authors, source providers, consumers).
  std::map<Digest, std::set<AgentKey>> presumed_holders;
  std::map<Digest, ArtifactRef> known_refs;      // artifacts named in results and sources
  std::map<Digest, std::int64_t> replicating;    // digest -> re-ask time
  std::map<Digest, std::int64_t> fetches;        // replication fetches in flight -> deadline
  std::map<Digest, std::int64_t> lost_since_ms;  // canonical outputs with no live holder
  std::int64_t next_replication_check_ms = 0;
  std::int64_t next_sync_ms = 0;
  std::size_t sync_rotor = 0;

  // ---- core.cc ----
  Output take();
  void event(EventKind kind, EventLevel level, std::string text,
             std::optional<AgentKey> peer = std::nullopt);
  const Statement& publish(StatementBody body);
  void ingest(const Statement& st, bool restored);
  void on_advert(const Statement& st);
  void handle_message(const AgentKey& from, const Message& msg);
  void heard(const AgentKey& peer);
  void do_tick();
  void send(const std::optional<AgentKey>& to, MessageBody body);
  bool is_live(const AgentKey& agent) const;  // alive or suspect (self: always)
  Peer* peer(const AgentKey& key);

  // ---- claims.cc ----
  void reconcile();
  void ensure_plan();
  void note_canonical_result(const Digest& job);
  void rebuild_candidates();
  const std::vector<AgentKey>& ranking(const Digest& job, const Digest& stage_digest);
  const JobResult* canonical_result(const Digest& job) const;
  const Statement* canonical_statement(const Digest& job) const;
  int failed_attempts(const Digest& job) const;
  bool failed_for_good(const Digest& job, int retries) const;
  std::uint32_t max_epoch(const Digest& job) const;
  bool claim_standing(const Digest& job, const Statement& claim) const;
  bool any_standing_claim(const Digest& job) const;
  bool released(const Digest& job, const AgentKey& author, std::uint32_t epoch) const;
  bool has_result(const Digest& job, const AgentKey& author, std::uint32_t epoch) const;
  int running_of_stage(const Digest& stage_digest) const;
  bool peer_full(const AgentKey& agent) const;
  void check_results(const Digest& job, const PlannedJob* planned);
  void reconcile_open_claims();
  void reconcile_running();
  void reconcile_tie_breaks();
  void consider_claim(const PlannedJob& job, bool regenerate);
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

  // ---- replication.cc ----
  std::vector<AgentKey> live_holders(const Digest& digest) const;
  bool available(const ArtifactRef& ref) const;  // held here, or composable from entries
  void add_held(const Digest& digest);
  void note_holders(const Statement& st);
  void holdings_changed();
  bool announced_recently(const Peer& p, const Digest& digest) const;
  void prune_announced(Peer& p);
  void reconcile_replication();
  bool needs_regeneration(const Digest& job, const PlannedJob& planned);
};

}  // namespace vow::promises
