// Agent: one vow agent, the coordination core (promises::Core) and the shell that
// carries out its decisions through Effects (agent/effects.h). The same object runs in
// vowd (agent/daemon.cc owns it with real effects) and in the seeded simulator
// (tests/sim owns it with simulated ones).
//
// Inputs (the owner calls these as things happen): messages and connections from the
// network, transfer outcomes, process exits, source snapshots, lost artifacts, and
// tick() every few ms. Worker tasks the agent submits come back as completions the
// owner runs on its thread; each feeds the agent through complete().
// Each input is queued; the queue is fed to the core one input at a time, and each of
// the core's outputs is carried out completely (persist, send, act, log) before the
// next input is fed. Carrying out an output never calls the core: what it causes (a
// spawn that failed, a peer now linked) is queued as a further input. So the core's
// output order holds across batches, and no input is ever fed while another is.
//
// The shell keeps only what carrying out needs: processes and transfers in flight and
// the adoption data of processes left from before a restart. Every decision (what to
// run, when to stop, which holder to fetch from) is the core's.
//
// Owned by one thread (the event loop or the simulator); not thread-safe. Worker tasks
// it submits capture values only.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/attached.h"
#include "agent/effects.h"
#include "agent/metrics.h"
#include "promises/core.h"

namespace vow::agent {

// Limits (docs/agent.md).
// Worker tasks waiting for a place in a full worker queue (beyond: the work fails, and
// the core retries it as it retries any failed fetch or job).
inline constexpr std::size_t kMaxWorkerBacklog = 65'536;
// New transfers wait while the worker backlog is this long (each fetched object is a
// worker task): a large tree is fetched as fast as the worker stores it.
inline constexpr std::size_t kFetchPauseBacklog = 256;
// Fetched objects stored by the worker in one group at most (Agent::store_received), and
// groups with the worker at a time: two, so that the worker goes on to the next group
// without waiting for the loop to take the last one's completion.
inline constexpr std::size_t kMaxStoreGroup = 256;
inline constexpr std::size_t kMaxStoreGroupsQueued = 2;
// Bulk fetches (replication) transferring or being stored at once.
inline constexpr std::size_t kMaxBulkFetches = 8;
// Inputs whose outputs are persisted in one commit (group commit): bounds how long the
// first output of a burst waits for the rest before it is sent.
inline constexpr std::size_t kMaxInputsPerCommit = 256;
// Peers' statements of passes that send and do nothing that depends on them wait to be
// committed with the next pass that commits anything else, or until this many are held
// or the oldest has waited this long (docs/agent.md, "Peers' statements, committed in
// batches").
inline constexpr std::size_t kMaxHeldPeerStatements = 256;
inline constexpr std::int64_t kMaxHeldPeerStatementsMs = 100;
// Own statements of one pass sent to every peer in one message, up to these.
inline constexpr std::size_t kMaxCoalescedStatements = 64;
inline constexpr std::size_t kMaxCoalescedBytes = 1u << 20;
// Small outputs of own runs waiting for their result to be sent (and small files of a
// source's snapshot for its version: at most kMaxAttachedBatchBytes a snapshot), and
// peers' that came with their statements waiting for a fetch (docs/coordination.md,
// "Small outputs travel with their result"), at most.
inline constexpr std::size_t kMaxOwnAttached = 4096;
inline constexpr std::size_t kMaxOwnAttachedBytes = 1u << 20;
inline constexpr std::size_t kMaxPeersAttached = 4096;
inline constexpr std::size_t kMaxPeersAttachedBytes = 8u << 20;

// Where the last turn's time went, in real time: for the owner's slow-turn log only (no
// decision reads it; the simulator ignores it).
struct TurnProfile {
  std::int64_t core_us = 0;     // the core deciding
  std::int64_t persist_us = 0;  // group commits
  std::int64_t carry_us = 0;    // sending, acting, logging
  std::size_t inputs = 0;
  const char* slowest = "";  // the input the core took longest over
  std::int64_t slowest_us = 0;
};

// Monotonic real time in microseconds, for profiles that no decision reads.
std::int64_t real_time_us();

// Counters for status and metrics.
struct AgentCounters {
  std::uint64_t statements_in = 0;
  std::uint64_t statements_persisted = 0;
  // Own statements persisted, and the signatures they needed: one for each statement
  // signed alone, one for each batch of statements signed together.
  std::uint64_t own_statements = 0;
  std::uint64_t own_signatures = 0;
  std::uint64_t jobs_started = 0;
  std::uint64_t jobs_adopted = 0;
  std::uint64_t worker_backlogged = 0;  // tasks that found the worker queue full
  std::uint64_t worker_refused = 0;     // of them, refused for good (the work failed)
  std::uint64_t trees_refused = 0;      // fetched trees that would expand past the limits
  std::uint64_t outputs_refused = 0;    // finished jobs whose outputs were refused
  // Passes that committed only fetched objects' index rows, carried out while their
  // sync was still under way (docs/agent.md, "Durability off the loop").
  std::uint64_t carried_before_sync = 0;
  // Passes whose sync was cheap enough to make at once (StateStore::sync_if_cheap).
  std::uint64_t synced_in_pass = 0;
  // Jobs started while the sync of the pass that claimed them was still under way
  // (docs/agent.md, "Starts before the sync").
  std::uint64_t started_before_sync = 0;
  // Jobs whose every input was placed moments ago, linked on the loop with no trip to
  // the worker (docs/storage.md, "Placed ahead of being stored").
  std::uint64_t started_from_placed = 0;
  // Passes whose peers' statements were held for a later commit (kMaxHeldPeerStatements).
  std::uint64_t held_passes = 0;
  // Batches of statements sent to every peer, and the statements in them (each peer
  // pays per batch: a frame, a wake of its loop, a pass).
  std::uint64_t batches_broadcast = 0;
  std::uint64_t statements_broadcast = 0;
  // Small outputs sent with own results; peers' taken for a fetch instead of a transfer;
  // peers' dropped on arrival for not being the bytes of their digest.
  std::uint64_t attached_sent = 0;
  std::uint64_t attached_used = 0;
  std::uint64_t attached_refused = 0;
};

class Agent {
 public:
  // `recovered`: rows of the running-job table found at start (processes a previous
  // incarnation started); the core decides about each (restored.running names them).
  Agent(promises::CoreConfig config, promises::RestoredState restored,
        std::vector<store::RunningJob> recovered, Effects effects,
        std::shared_ptr<spdlog::logger> log);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // ---- inputs ----
  // Publishes the advert and resumes work. Call once, first.
  void start();
  // From a peer, statements already verified (signature, trusted author) and carrying
  // their signed forms.
  void message(const AgentKey& from, promises::Message message);
  void peer_connected(const AgentKey& peer);
  void fetch_outcome(std::uint64_t transfer, const Status& status);
  void process_exited(const Digest& job, const ProcessExit& exit);
  // ATTACHED: bytes of its small files, to go with the version the core publishes.
  void source_snapshot(const std::string& pipeline, const std::string& source,
                       const ArtifactRef& artifact,
                       std::vector<promises::Attached> attached = {});
  void artifact_lost(const Digest& digest);
  // Objects garbage collection is about to remove from the store (Core::retained() did
  // not name them): the core no longer counts them as held.
  void artifacts_removed(std::vector<Digest> digests);
  void reconfigure(std::vector<promises::CorePromise> promises,
                   std::vector<promises::Pipeline> pipelines, std::vector<AdvertSource> sources);
  // A user asked to run failed jobs again (vow retry): the core publishes a Retry for
  // each job failed past its retries.
  void retry(std::vector<Digest> jobs, std::string reason);
  // Time passes: timeouts, the core's timed decisions, worker backlog.
  void tick();
  // Every commit up to `ticket` is durable (StateStore::defers_sync): what waited for
  // them is carried out. sync_failed: one could not be made durable; the agent stops.
  void synced(std::uint64_t ticket);
  void sync_failed(const Status& status);
  // Outputs waiting for a sync.
  std::size_t parked() const { return parked_.size(); }
  // Stops claiming, stops what runs and releases every claim (before exit).
  void withdraw();
  // Commits the peers' statements held back for a batch (kMaxHeldPeerStatements) now:
  // before something reads the ledger file rather than the core.
  void commit_held();
  std::size_t held_statements() const { return held_statements_.size(); }
  // Inputs fed between hold() and release() are only queued; release() feeds them all
  // to the core and persists their outputs in one commit (group commit). vowd holds the
  // agent for one turn of its loop, so a burst of messages costs one sync.
  void hold() {
    held_ = true;
    turn_ = {};
  }
  void release();
  // Between hold() and release(): inputs fed now reach the core at release().
  bool held() const { return held_; }
  const TurnProfile& turn() const { return turn_; }
  // A client asked for an artifact here (vow get): fetched from the live holders.
  // False if no live agent holds it.
  bool fetch_for_client(const Digest& digest);
  // Runs a worker completion, then what it queued. The completions of the tasks the
  // agent submits call this themselves: the owner only runs them, on its thread.
  void complete(const std::function<void()>& completion);

  // ---- state ----
  // Set when the agent cannot go on (a statement could not be persisted): the owner
  // stops it; nothing was sent or done that is not on disk.
  bool failed() const { return failed_; }
  // Fetched objects with the worker, their index rows not back yet (Agent::store_received).
  bool storing() const { return storing_ > 0; }
  promises::Core& core() { return *core_; }
  const promises::Core& core() const { return *core_; }
  const AgentCounters& counters() const { return counters_; }
  const Metrics& metrics() const { return metrics_; }
  std::size_t jobs_here() const { return jobs_.size(); }
  // Being fetched, or fetched and stored with the core not told yet (its input waits for
  // the loop's turn to end: a client asking meanwhile must not read "neither held nor
  // fetching").
  bool fetching(const Digest& digest) const {
    return fetches_.count(digest) != 0 || arriving_.count(digest) != 0;
  }
  // Every artifact being fetched, and every entry of a tree being fetched (those held
  // already too: the tree is stored only once each is held, so a GC pass must keep them).
  std::set<Digest> in_flight() const;
  // File or tree, as statements named it (fetches must know which).
  std::optional<bool> is_tree(const Digest& digest) const;

 private:
  // A job this agent is running.
  struct Job {
    enum class Phase : std::uint8_t { kPreparing, kRunning, kCollecting };
    promises::StartJob start;
    Phase phase = Phase::kPreparing;
    bool stopping = false;   // killed: its end is no result
    bool timed_out = false;  // killed by its timeout: its end is a failure
    std::int64_t started_unix_ms = 0;
    std::int64_t started_mono_ms = 0;
    std::int64_t deadline_ms = 0;  // 0: no timeout
  };
  // A transfer of an artifact (a file, or a tree and then its missing children).
  struct Fetch {
    Digest digest;
    std::vector<AgentKey> holders;  // best first
    std::size_t holder = 0;         // next to try
    std::optional<AgentKey> from;   // the one being tried
    std::optional<bool> is_tree;
    std::uint64_t transfer = 0;  // 0: none in flight
    std::set<Digest> waiting_children;
    std::optional<std::vector<TreeEntry>> tree_entries;
    std::vector<Digest> parents;  // trees waiting for this one
    bool for_core = false;        // the core asked (it hears the outcome)
    // Replication (and the children of a replicated tree): background work, a few at a
    // time, so that a job's inputs never wait behind a large tree's objects.
    bool bulk = false;
    bool bulk_waiting = false;  // in bulk_queue_ (which drops entries lazily)
    // Came with its result and placed for the core's jobs before it was stored: the core
    // heard of it then, and storing it only makes it durable.
    bool placed = false;
  };

  // ---- agent.cc ----
  // `what` names the input in the slow-turn log (a string literal).
  void queue(const char* what, std::function<promises::Output()> input);
  void pump();
  void carry_out(std::vector<promises::Output>& outs);
  // Sends, acts and logs what one output says (after its writes are durable).
  void dispatch(promises::Output& out);
  // Moves the peers' statements of OUTS into held_statements_ when nothing else in OUTS
  // needs a commit before it is sent or done.
  void hold_peer_statements(std::vector<promises::Output>& outs);
  // Joins the pass's broadcasts of own statements into as few messages as the limits
  // allow (kMaxCoalescedStatements), in their order, at the place of the first.
  void coalesce_broadcasts(std::vector<promises::Output>& outs);
  // Adds own results' small outputs and own source versions' small files (own_attached_)
  // to the broadcasts of OUTS that carry those statements.
  void attach_outputs(std::vector<promises::Output>& outs);
  // Keeps the bytes a peer's batch carries for the small files its statements name.
  void keep_attached(promises::StatementBatch& batch);
  bool held_statements_due() const;
  Status persist(const std::vector<Statement>& statements);
  void send(const promises::Outbound& out);
  void act(promises::Action& action);
  void log_events(const std::vector<promises::Event>& events);
  void remember_refs(const Statement& st);
  void submit(Worker::Task task, std::function<void(const Status&)> refused);
  void flush_backlog();
  std::string job_name(const promises::StartJob& s) const;

  // ---- agent_jobs.cc ----
  void start_job(promises::StartJob start);
  void kill_job(const promises::KillJob& kill);
  bool adopt(const store::RunningJob& row, promises::StartJob& start);
  void spawn_job(const Digest& id);
  bool inputs_placed(const promises::StartJob& start) const;
  void collect_job(const Digest& id, const ProcessExit& exit);
  void finish_job(const Digest& id, promises::JobOutcome outcome);
  void job_gone(const Digest& id);
  void stop_leftover(const store::RunningJob& row, const promises::KillJob& kill);
  void check_deadlines();
  void observe_handoff(const Digest& id, std::int64_t started_unix_ms);

  // ---- agent_fetch.cc ----
  void fetch(const Digest& digest, std::vector<AgentKey> holders, bool for_core,
             std::optional<Digest> parent = std::nullopt, bool bulk = false);
  void release_bulk(const Digest& digest);
  void try_next_holder(Fetch& f, const Status& why);
  void start_queued_fetches();
  void abandon_transfers_from(const AgentKey& peer);
  void fetch_received(const Digest& digest);
  void store_received();
  void received_stored(const Digest& digest, Result<Received> r);
  // The worker is far enough behind that new transfers wait (kFetchPauseBacklog).
  bool storing_behind() const;
  void store_tree(const Digest& digest);
  // By value: callers pass a fetch's own digest, and the fetch is erased here.
  void fetch_done(Digest digest, const Status& status);
  // Tells the core an artifact it asked for is here.
  void fetched_for_core(const Digest& digest);
  void store_placed();
  void fetch_attached_now(promises::Output& out);
  void start_placed_now(promises::Output& out);

  Effects fx_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<promises::Core> core_;

  std::deque<std::pair<const char*, std::function<promises::Output()>>> inputs_;
  TurnProfile turn_;
  // Deferred durability: outputs waiting for the sync of their ticket, in order.
  std::uint64_t tickets_ = 0;  // last requested
  std::uint64_t synced_ = 0;   // last durable
  std::uint64_t needed_ = 0;   // last that persisted statements (not only index rows)
  std::deque<std::pair<std::uint64_t, promises::Output>> parked_;
  // Index rows of a finished job's logs and outputs (synced, not yet indexed): committed
  // in the next pass's group, with the result that names them.
  std::vector<store::ArtifactRecord> index_rows_;
  // Running-job rows of runs that ended, removed in the next commit (with the result
  // of the run, when it has one) rather than in a transaction of their own.
  std::set<Digest> rows_ended_;
  // Running-job rows of runs started since the last commit: noted at the start
  // (StateStore::note_running_job), committed in the next group, before it is sent.
  std::map<Digest, store::RunningJob> rows_started_;
  // Peers' statements the core took, not committed yet (kMaxHeldPeerStatements), in
  // the order they came, and when the first came.
  std::vector<Statement> held_statements_;
  std::int64_t held_since_ms_ = 0;
  bool commit_held_now_ = false;  // commit_held(): no waiting for more
  bool pumping_ = false;
  bool held_ = false;  // between hold() and release()
  bool failed_ = false;

  std::map<Digest, Job> jobs_;
  // Rows of the running-job table found at start, until the core resumes (StartJob) or
  // stops (KillJob) each: the adoption data of processes a previous incarnation left.
  std::map<Digest, store::RunningJob> recovered_;

  std::map<Digest, Fetch> fetches_;
  std::set<Digest> arriving_;  // fetched for the core, its input not taken yet
  std::map<std::uint64_t, Digest> fetch_by_transfer_;
  std::deque<Digest> fetch_queue_;  // waiting for a transfer place, each digest once
  // Transfers that ended, to be stored by the worker in groups: at most
  // kMaxStoreGroupsQueued groups are with the worker at a time, and what ends meanwhile
  // goes in the next.
  std::vector<Digest> to_store_;
  std::size_t storing_ = 0;  // groups with the worker
  std::set<Digest> bulk_busy_;       // bulk fetches transferring or being stored
  std::deque<Digest> bulk_queue_;    // bulk fetches waiting for one of those places
  std::unordered_map<Digest, bool> is_tree_;  // as statements named artifacts
  // Placed ahead of being stored (Fetch::placed): stored once the pass that placed them
  // has started its jobs (their inputs are materialized first, on the worker).
  std::vector<Digest> placed_;
  AttachedBytes own_attached_{kMaxOwnAttached, kMaxOwnAttachedBytes};
  AttachedBytes peers_attached_{kMaxPeersAttached, kMaxPeersAttachedBytes};

  std::deque<std::pair<Worker::Task, std::function<void(const Status&)>>> backlog_;

  AgentCounters counters_;
  Metrics metrics_;
};

}  // namespace vow::agent
