// Core: the coordination state machine of one agent (docs/coordination.md), in the style
// of etcd's raft RawNode. It is fed inputs and returns an Output batch; it holds no
// sockets, no clock, no threads and no randomness, so the daemon and the simulator run
// the same code and any run replays from its inputs.
//
// Inputs:
//   on_statement(peer, st)    a statement from a peer, ALREADY VERIFIED by the caller
//                             (signature, trusted author); anything else must be dropped
//   on_message(peer, msg)     hello / heartbeat / sync request / statements / have
//                             (statements inside must be verified the same way first)
//   tick(now_ms, wall_ms)     monotonic time (decisions) and wall time (stamped on own
//                             statements, for humans only). Call it every few ms AND
//                             after each batch of network inputs (the daemon: once per
//                             loop iteration): the decisions that statements call for
//                             (claim, start, kill) are taken there, so a burst of
//                             statements costs one decision pass.
//   job_exited / job_stopped / artifact_fetched / artifact_fetch_failed /
//   artifact_lost / artifacts_removed / source_snapshot
//                             local events from the shell
//   peer_connected            a link to a peer came up (send it a hello)
//   retry                     a user asked to run failed jobs again
//   withdraw / shutdown       release every claim and stop claiming
// Every input returns an Output (see its comment for the order the shell must follow).
// Queries (jobs(), peers(), ...) are read-only views for status and the command line.
//
// Owned by the agent's event loop (or the simulator). Not thread-safe: call it from one
// thread. Output values own their data.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "promises/ledger.h"
#include "promises/limits.h"
#include "promises/liveness.h"
#include "promises/messages.h"
#include "promises/pipeline.h"
#include "promises/planner.h"
#include "promises/statement.h"

namespace vow::promises {

// ---- Limits and policy constants (docs/coordination.md) ----
// Statements per sync answer (missing and diverging), within kMaxSyncAnswerBytes.
inline constexpr std::size_t kMaxStatementsPerSync = 4096;
// Unasked sync requests per heartbeat_ms (a hello or heartbeat showed a peer holds
// more); peers a catch-up goes on pulling from at once; how long after a request its
// answer counts as one (Core::Impl::continue_pull).
inline constexpr std::size_t kMaxPullPeers = 2;
inline constexpr std::size_t kMaxPulling = 1;
inline constexpr std::int64_t kPullAnswerWindowMs = 2'000;
// Signed bytes in one sync answer: a statement is at most 12 MiB and a frame 16 MiB
// (transport/codec.h), so an answer always fits one frame.
inline constexpr std::size_t kMaxSyncAnswerBytes = 3u << 20;
inline constexpr std::int64_t kRetryBackoffBaseMs = 200;    // first retry waits this long
inline constexpr std::int64_t kRetryBackoffMaxMs = 10'000;  // doubling, capped here
// A job whose run here was fenced by a higher epoch more than once waits this long
// before it is claimed again, doubling per further fence, capped (fencing claims whose
// author is not live would otherwise make claim-and-be-fenced a loop).
inline constexpr std::int64_t kFenceBackoffBaseMs = 200;
inline constexpr std::int64_t kFenceBackoffMaxMs = 10'000;
// Equivocation proofs carried by one sync answer (two statements each), and statements
// sent for one author whose statements a peer holds differently (docs/coordination.md 8).
inline constexpr std::size_t kMaxProofStatementsPerSync = 64;
inline constexpr std::size_t kMaxDivergingPerAuthor = 256;
// Void ranges (of at most Ledger::kMaxVoidRun seqs each) in one sync answer.
inline constexpr std::size_t kMaxVoidRangesPerSync = 64;
// A job another agent owns (its best-ranked live candidate) and keeps a place for is
// taken by others only after it has been claimable this long (docs/coordination.md).
inline constexpr std::int64_t kStealPatienceMs = 500;
// Jobs of one backlog a decision pass looks at beyond the stage's capacity here (jobs at
// the front that wait, for a retry backoff or a claim step, are passed over up to this).
inline constexpr std::size_t kBacklogLookahead = 64;
inline constexpr std::int64_t kFetchRetryMs = 200;          // wait before re-trying a fetch
inline constexpr std::int64_t kReplicateTimeoutMs = 5'000;  // re-ask a replication after this
inline constexpr std::size_t kMaxFetchCandidates = 8;       // holders named in one fetch
inline constexpr std::size_t kMaxHoldingsPerHave = 1'000'000;
// An unanswered HaveRequest is asked again after this (a Have is lost, or slow to come).
inline constexpr std::int64_t kHaveRetryMs = 2'000;
inline constexpr std::int64_t kReplicationCheckMs = 500;  // replication / loss check period
// The longest between two replication checks that look at every canonical output (in
// between, a check looks at what changed: Replication::check).
inline constexpr std::int64_t kFullReplicationCheckMs = 600'000;
// Planned jobs one replication check walks (a full walk is spread over checks).
inline constexpr std::size_t kSweepJobsPerCheck = 4'096;
// A job left running at a restart (RestoredState::running) is decided once this agent
// has synced with a peer (it cannot know before whether another agent took the job over
// meanwhile). Without a sync this long after start() it is decided on what the agent
// knows (a lone agent resumes its work). Longer than a peer's reconnect backoff (the
// daemon caps it at 2 s), so an agent among live peers always hears them first.
inline constexpr std::int64_t kRestoreSyncWindowMs = 5'000;
// Decisions (claims, starts, fencing, replication) are taken on tick() after statements
// arrived since the last tick, and when a time-driven one is due (a claim step, the end
// of a backoff, a peer's death, the replication check every heartbeat_ms). Local events
// (job exits, fetches) decide at once.

// Rendezvous score of an agent for a key (a job id, or an artifact digest for
// replication): BLAKE2b over both; the higher score ranks first.
Digest rendezvous_score(const Digest& key, const AgentKey& agent);

// ---- Configuration and restored state ----

struct CorePromise {
  std::string pipeline;
  std::string stage;
  int capacity = 1;
};

struct CoreConfig {
  AgentKey key;
  std::string name;
  std::vector<std::string> endpoints;
  std::vector<CorePromise> promises;  // stages of `pipelines` this agent runs
  std::vector<AdvertSource> sources;  // datasets this agent provides
  std::vector<Pipeline> pipelines;    // loaded from files (with timeout and retries)
  Timing timing;
  int replicas = 2;
  std::int64_t expected_duration_ms = 0;  // written on claims, for humans
  IdleBudgetLimits idle_budget;           // per author (rule 6, limits.h)
  // Jobs the job index looks at again per query unasked, in id order (a bound on how
  // long a state it failed to mark could stay stale). 0: none (tests of the marks).
  std::size_t job_index_scrub = 64;
  // A horizon is proposed (by the agent designated for it) once this many statements
  // are held beyond the last one's cut (docs/storage.md, "The ledger horizon"); 0: this
  // agent proposes none (it still endorses and applies others').
  std::uint64_t horizon_every = 0;
  // Its horizons also retire superseded jobs, and it endorses those that do; false: it
  // proposes and endorses only horizons that do not (docs/storage.md).
  bool retire_superseded = false;
  // Its proposal is a checkpoint once the horizons since the last one listed this
  // percentage of the entries a checkpoint would (docs/storage.md, "Checkpoints"): the
  // horizon statements held then stay within (1 + this / 100) checkpoints. 0: it
  // proposes none (it still endorses and applies others').
  std::uint32_t checkpoint_percent = 100;
  // The peers this agent's configuration names by key (`[agent] peers`, "ID@ENDPOINT"):
  // it proposes and endorses ledger horizons only once it has heard from most of them
  // and itself (docs/storage.md, "Agreement"). Empty: no such condition.
  std::vector<AgentKey> configured_peers;
  // Statements per sync answer (the simulator's scenarios take smaller answers, so
  // that their ledgers of a few thousand statements take several).
  std::size_t sync_answer_statements = kMaxStatementsPerSync;
  // Checks on every horizon applied that every job's canonical result is the same after
  // it as before (for the simulator).
  bool check_horizons = false;
  // Checks after every decision pass that the claim backlogs kept up to date by events
  // equal ones built from scratch (costs a rebuild per pass: for the simulator).
  bool check_backlogs = false;
  // Checks every plan made with the definitions of the plan before (DefinitionsCache)
  // against one made without (costs a second plan each time: for the simulator).
  bool check_plans = false;
  // Signs an own statement (a pure function of key and statement: Ed25519 is
  // deterministic): its result is set as the statement's signed form, so that the
  // statements in `persist` and in messages carry the bytes to store and send. Empty
  // (unset, or an empty result) leaves statements unsigned: the shell refuses to
  // persist an unsigned own statement.
  std::function<SignedForm(const Statement&)> sign;
  // Statements signed together (docs/protocol.md, "Statements signed together"): when
  // both are set they are used instead of `sign`. `encode` gives an own statement its
  // bytes as it is published (empty: it cannot be encoded, and stays unsigned);
  // `sign_together` then signs every statement one input published, at once, before the
  // output leaves the core: each form it is given holds the bytes, and gets its
  // signature and path (one signature over the batch's root, or a statement alone over
  // its bytes).
  std::function<std::string(const Statement&)> encode;
  std::function<void(const std::vector<SignedForm*>&)> sign_together;
  // With `encode` and `sign_together`: false leaves the statements an input published
  // unsigned in the output it returns (Output::unsigned_statements), for the caller to
  // sign with Core::sign before anything reads them and before its next call into the
  // core (which asserts it): a start whose inputs are in place may then go first (the
  // agent's, docs/agent.md "Starts before the signature").
  bool sign_on_take = true;
  // Adds to an own statement, just before it is signed, what only its author can add:
  // the attestation signature of a result or source version (docs/provenance.md).
  // Unset: nothing is added.
  std::function<void(Statement&)> attest;
};

// A run of a job by this agent: a restored row of the running-job table (as the core
// needs it; store::RunningJob is the row itself), or one of Core::running().
struct OwnRun {
  JobRef job;
  std::uint32_t epoch = 0;
  // In Core::running(): a KillJob was sent for this run and its job_stopped has not
  // arrived; its process may still be alive, so it still holds a place of the stage's
  // capacity. Ignored in RestoredState.
  bool stopping = false;
};

struct RestoredState {
  std::vector<Statement> statements;  // everything persisted (own and peers')
  std::uint64_t last_seq = 0;         // own sequence counter
  // Rows of the running-job table at the crash. The core answers each with exactly one
  // StartJob for that (job, epoch) (resumed: the shell adopts the process or exit status
  // it still has) or a KillJob (not resumable). A row whose claim the shell cannot find
  // may carry the job digest alone.
  std::vector<OwnRun> running;
  std::vector<Digest> held;  // artifacts in the local store
  // Equivocation proofs persisted (Output::proofs): each the second statement of an
  // (author, seq) whose first is among `statements`.
  std::vector<Statement> proofs;
  // Void slots persisted (Output::voided), merged into ranges.
  std::vector<VoidRange> voids;
};

// ---- Messages between cores: promises/messages.h ----

struct Outbound {
  std::optional<AgentKey> to;  // nullopt: every connected peer
  Message message;
};

// ---- Actions for the shell ----

struct StartJob {
  JobRef job;
  std::uint32_t epoch = 0;
  std::vector<NamedArtifact> inputs;  // all held locally (fetched and verified)
  Stage stage;
  std::int64_t timeout_ms = 0;
  bool regenerate = false;  // re-run of a finished job whose output was lost
};
// Stop the process of this run, if the shell has one (a run still materializing its
// inputs has none yet). The shell answers with job_stopped(job, epoch) once no process
// of the run is left, at once if there never was one.
struct KillJob {
  Digest job;
  std::uint32_t epoch = 0;
  std::string reason;
};
struct FetchArtifact {
  Digest digest;
  std::vector<AgentKey> holders;  // best first (the producer, then replicas)
};
struct ReplicateArtifact {
  Digest digest;
  std::vector<AgentKey> holders;
};
struct Connect {
  AgentKey peer;
  std::vector<std::string> endpoints;
};
// The failure detector has just declared this peer dead (emitted once per transition to
// dead). The shell gives up what it waits for from the peer: in-flight transfers from it
// move on to their next holder (the core's own decisions already leave it out).
struct PeerDeclaredDead {
  AgentKey peer;
};
using Action =
    std::variant<StartJob, KillJob, FetchArtifact, ReplicateArtifact, Connect, PeerDeclaredDead>;

// ---- Events for the log ----

enum class EventKind : std::uint8_t {
  kPeerState,  // a peer became alive / suspect / dead
  kClaimed,    // this agent claimed a job
  kStarted,
  kFenced,  // a running job was stopped (higher epoch, result, tie-break)
  kReleased,
  kResult,            // this agent published a result
  kNonDeterministic,  // two results of a job disagree
  kSuperseded,
  kRetry,
  kFailed,  // a job failed past its retries
  kRegenerate,
  kReplicate,
  kConflict,            // an author signed two different statements with one seq
  kEquivocation,        // ... the first time for that author: it is marked equivocating
  kUnbound,             // a statement that does not count was held (rules 2-4)
  kDefinitionConflict,  // current adverts promise two definitions of one stage
  kRefused,             // a peer's statement over a limit or its author's budget (rule 6)
  kHorizon,             // a horizon was proposed, endorsed or applied, or did not match
};
const char* event_kind_name(EventKind kind);

enum class EventLevel : std::uint8_t { kDebug, kInfo, kWarn, kError };

struct Event {
  EventKind kind;
  EventLevel level = EventLevel::kInfo;
  std::string text;
  std::optional<AgentKey> peer;  // the other agent the event is about, if one
};

// The result of one input. The shell MUST carry it out in this order:
//   1. persist `persist` (durably: own statements first in the vector order, so the
//      sequence counter survives a crash, then peers' statements to store);
//   2. send `messages` (own statements in them are exactly those just persisted, with
//      the signed forms CoreConfig::sign or sign_together gave them); a
//      SyncRequest may go before step 1 (it carries no statement: it asks for what the
//      ledger in memory lacks);
//   3. perform `actions` in order (a kill before a start of the same job); a StartJob
//      may be performed once step 1 is committed, before it is durable (its process is
//      local and its result a later statement; a crash that loses the claim leaves a
//      running-job row the restarted core stops);
//   4. log `events`.
// Own statements carry author, seq and body set by the core. Running-job table: add a
// row when performing StartJob, remove it once the process is gone (the job exited, or
// it was killed and reaped: then report job_stopped).
// Kills are acknowledged: after a KillJob for (job, e) the core emits no StartJob for
// that job, at any epoch, until job_stopped(job, e) (or job_exited(job, e)) arrives; the
// stopped run holds its place of the stage's capacity until then. So the shell never has
// two processes of one job, nor more processes of a stage than its promised capacity.
struct Output {
  // Own statements published by this input are still to be signed (Core::sign);
  // CoreConfig::sign_on_take false only.
  bool unsigned_statements = false;
  std::vector<Statement> persist;
  std::vector<Outbound> messages;
  std::vector<Action> actions;
  std::vector<Event> events;
  // The second statement of each equivocation proof found (rule 5), to be kept beside
  // the first (which is held), so that the proof outlives a restart.
  std::vector<Statement> proofs;
  // Slots that became void (Ledger, "void adverts"): the shell forgets the advert held
  // there, if any, and records the slot as void, after `persist`.
  std::vector<StatementRef> voided;
  // Statements a horizon retired (docs/storage.md): the shell drops them from disk,
  // after `persist`.
  std::vector<StatementRef> retired;
  bool empty() const {
    return persist.empty() && proofs.empty() && voided.empty() && retired.empty() &&
           messages.empty() && actions.empty() && events.empty();
  }
  void append(Output&& other);
};

// What a finished process produced.
struct JobOutcome {
  bool ok = false;
  std::vector<NamedArtifact> outputs;
  std::int32_t exit_status = 0;
  std::string error;
  std::int64_t started_unix_ms = 0;
  std::int64_t ended_unix_ms = 0;
  std::optional<Digest> stdout_digest;
  std::optional<Digest> stderr_digest;
};

// ---- Query views ----

enum class JobState : std::uint8_t {
  kReady,       // inputs known, nobody runs it
  kRunning,     // a live claim stands
  kDone,        // a canonical result exists
  kFailed,      // failed past its retries
  kSuperseded,  // in the ledger but no longer planned (inputs changed or non-canonical)
};
const char* job_state_name(JobState state);

struct ClaimView {
  AgentKey author;
  std::uint32_t epoch = 0;
  bool released = false;
  bool live = false;
  bool bound = true;  // counts (rule 4); else kept as evidence only
};
struct ResultView {
  AgentKey author;
  std::uint64_t seq = 0;
  std::uint32_t epoch = 0;
  bool ok = false;
  Digest outputs_digest;
  bool canonical = false;
  bool bound = true;  // a candidate for canonical (rule 3); else evidence only
};
struct JobView {
  JobRef job;
  JobState state = JobState::kReady;
  std::vector<ClaimView> claims;
  std::vector<ResultView> results;
  bool nondeterministic = false;
  int failed_attempts = 0;
};
// Statements held that do not count, by rule and reason (a function of the ledger, the
// same on every agent holding the same statements), and the authors proven to equivocate.
struct BindingReport {
  std::map<std::string, std::uint64_t> unbound;  // "claim: epoch not earned" -> count
  std::vector<AgentKey> equivocators;
  std::uint64_t conflicts_dropped = 0;  // further conflicts of known equivocators
};
// Jobs of one stage (its pipeline and stage names) by state, as Core::job_counts()
// keeps them.
struct JobCounts {
  std::uint64_t ready = 0;
  std::uint64_t running = 0;
  std::uint64_t done = 0;
  std::uint64_t failed = 0;
  std::uint64_t superseded = 0;
  std::uint64_t nondeterministic = 0;
  std::uint64_t& of(JobState state);
  std::uint64_t of(JobState state) const;
  bool operator==(const JobCounts&) const = default;
};
using StageKey = std::pair<std::string, std::string>;  // (pipeline, stage)
// A page of jobs (Core::jobs_page), in job id order.
struct JobFilter {
  std::string pipeline;             // empty: any
  std::string stage;                // empty: any
  std::optional<JobState> state;    // nullopt: any
  std::optional<Digest> after;      // only jobs whose id is greater (the last page's `next`)
  std::size_t limit = 0;            // at most this many; 0: no limit
};
struct JobPage {
  std::vector<JobView> jobs;
  // Set when more jobs match after this page: pass it as JobFilter::after.
  std::optional<Digest> next;
};
struct PeerView {
  AgentKey key;
  std::string name;
  Liveness liveness = Liveness::kDead;
  std::optional<std::int64_t> last_heard_ms;
  std::uint32_t running = 0;
  std::uint32_t capacity = 0;
  // The sum of its version vector as it last said (hello, heartbeat): how much of the
  // ledger it holds, to compare with Ledger::vv_sum() here.
  std::uint64_t vv_sum = 0;
};

class Core {
 public:
  Core(CoreConfig config, RestoredState restored, std::int64_t now_ms);
  ~Core();
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  // Publishes the advert and pipeline definitions (first call only) and resumes work.
  // Call tick(now, wall) once before, so that own statements carry a wall time.
  [[nodiscard]] Output start();

  [[nodiscard]] Output on_statement(const AgentKey& from, const Statement& statement);
  [[nodiscard]] Output on_message(const AgentKey& from, const Message& message);
  [[nodiscard]] Output peer_connected(const AgentKey& peer);
  [[nodiscard]] Output tick(std::int64_t now_ms, std::int64_t wall_unix_ms = 0);
  // Signs the own statements OUT holds unsigned (CoreConfig::sign_on_take false): in
  // its persist and messages, and in the core's ledger. Call it with the output the last
  // call returned, before any other call into the core.
  void sign(Output& out);

  // The process of a started job ended. For a run the core told to stop (KillJob) this
  // is its job_stopped: the outcome is not a result.
  [[nodiscard]] Output job_exited(const Digest& job, std::uint32_t epoch, JobOutcome outcome);
  // The answer to a KillJob(job, epoch): no process of that run is left (it was reaped,
  // or it had never been spawned). Frees its place and may start a later epoch of the
  // job. Ignored for a run that is not stopping.
  [[nodiscard]] Output job_stopped(const Digest& job, std::uint32_t epoch);
  [[nodiscard]] Output artifact_fetched(const Digest& digest);
  [[nodiscard]] Output artifact_fetch_failed(const Digest& digest);
  [[nodiscard]] Output artifact_lost(const Digest& digest);
  // A fetched input was refused for what it is, not for where it came from (a tree that
  // would expand past the limits of promises/tree.h: every agent refuses it alike).
  // Each run of this agent waiting for it fails at once with `reason` (a failed result:
  // it counts against the job's retries, and `vow retry` can run it again), instead of
  // fetching it again and again.
  [[nodiscard]] Output artifact_refused(const Digest& digest, const std::string& reason);
  // The shell is about to remove these from its store (garbage collection, of what
  // retained() did not name): they are no longer held here. One decision pass.
  [[nodiscard]] Output artifacts_removed(const std::vector<Digest>& digests);
  [[nodiscard]] Output source_snapshot(const std::string& pipeline, const std::string& source,
                                       const ArtifactRef& artifact);
  // A reloaded config (SIGHUP): the new promises, pipelines and sources replace the old,
  // a new advert says so, and jobs of stages no longer promised are stopped and released
  // so that other agents take them at once.
  [[nodiscard]] Output reconfigure(std::vector<CorePromise> promises,
                                   std::vector<Pipeline> pipelines,
                                   std::vector<AdvertSource> sources);
  // A user asked to run these jobs again (`vow retry`): for each planned job failed past
  // its retries, publishes a Retry (failures so far no longer count, so the job is
  // claimable again; the candidates that failed it rank last). Other jobs are ignored.
  [[nodiscard]] Output retry(const std::vector<Digest>& jobs, const std::string& reason);
  // Stop claiming, kill and release every running job (shutdown: the same, before exit).
  [[nodiscard]] Output withdraw();

  // ---- Queries ----
  const AgentKey& key() const;
  const Ledger& ledger() const;
  const Plan& plan();
  // Plans made so far, by what called for each: "start", "config", "stage_done" (the
  // last job of a stage got its result), "failure", "retry", "claim_binds",
  // "result_again", "pipeline_or_source", "advert", "equivocation", "horizon_superseded",
  // "horizon_changed". Each costs a pass over every job known (docs/coordination.md).
  const std::map<std::string, std::uint64_t>& plans_made() const;
  // Every job of the plan and the ledger (id order). Costs a view per job: status and
  // the command line use job_counts() and jobs_page() instead.
  std::vector<JobView> jobs();
  std::optional<JobView> job(const Digest& job);
  // Jobs by (pipeline, stage) and state, kept by a job index that a query brings up to
  // date by looking again only at the jobs touched since the previous query (their
  // statements, own runs), or at every job when what all states read changed (the plan,
  // a peer's liveness, an equivocator found). Equal to counting jobs().
  const std::map<StageKey, JobCounts>& job_counts();
  // Jobs the job index looked at again so far (each a view of one job): what the
  // queries above cost, in jobs.
  std::uint64_t jobs_indexed() const;
  // Jobs matching `filter`, in id order, at most filter.limit, from the same index: the
  // cost is the page, not the history.
  JobPage jobs_page(const JobFilter& filter);
  // binding_report() as the job index keeps it (equal to it; only source versions are
  // counted again, and only when one arrived).
  const BindingReport& binding_summary();
  // The claim book's kept per-job summaries, each equal to one made afresh (for the
  // simulator's invariants: what an event left cached must be what a recount reads).
  bool claim_summaries_consistent() const;
  // The adverts and source versions the plan read are those in force now (planner.h,
  // PlanBasis), or a plan is due (for the simulator's invariants).
  bool plan_basis_current() const;
  // A pull is bringing in what peers hold and this agent does not (docs/coordination.md,
  // "Pulling"): nothing is claimed, and the plan made last stands until it ends.
  bool catching_up() const;
  // The plan is out of date and put off until the pull ends; the job index, and so
  // job_counts() and jobs_page(), stay as they were meanwhile.
  bool plan_put_off() const;
  // The artifacts this agent must keep in its store (the retention policy of
  // docs/storage.md): inputs of its runs; outputs and logs of the canonical results of
  // planned jobs for which this agent is among the `replicas` holders the core keeps
  // (the first `replicas` live agents by rendezvous score that hold it), or which fewer
  // than `replicas` live peers hold; the artifacts of the current source versions.
  // Before a plan exists every canonical result and source version counts. Trees stand
  // for their entries (the store keeps what a kept tree names). Ascending, no repeats
  // (look one up with std::binary_search).
  std::vector<Digest> retained() const;
  // What retained() reads, in a few bytes: the plans made, the statements held, own
  // runs, own sources' config, what is known of who holds what (Holdings::generation),
  // and which peers are live. While two stamps are equal, so are the two answers of
  // retained() (a periodic garbage collection pass that found nothing to do is not made
  // again until something here changes).
  std::string retention_stamp() const;
  std::vector<PeerView> peers() const;
  // The canonical (least (epoch, outputs digest)) successful result of a job.
  const Statement* canonical(const Digest& job) const;
  bool nondeterministic(const Digest& job) const;
  // The author signed two different statements with one seq (proof held): none of its
  // statements counts for any canonical choice.
  bool equivocating(const AgentKey& author) const;
  BindingReport binding_report() const;
  // Peers' statements refused before they were kept (rule 6), by reason: "over_limit"
  // (a field over its named limit, promises/limits.h) and "over_budget" (its author's
  // budget of statements that do not count was spent).
  const std::map<std::string, std::uint64_t>& refused() const;
  bool holds(const Digest& digest) const;
  // Live peers that hold (or are presumed to hold) an artifact, best first.
  std::vector<AgentKey> holders(const Digest& digest) const;
  const std::set<Digest>& held() const;
  // Artifacts the last replication check looked at: every canonical output on a full
  // walk (a new plan, a change of who is live, or kFullReplicationCheckMs), in between
  // only those under-replicated, lost or whose holders changed.
  std::size_t replication_checked() const;
  // Full walks of the replication check begun (the one at start included).
  std::uint64_t replication_walks() const;
  // This agent's holdings version (incarnation, version), as its heartbeats carry it.
  std::pair<std::uint64_t, std::uint64_t> holdings_version() const;
  // What `peer` holds as its Haves (complete sets and deltas) said, at the version
  // peer_holdings_version(peer) ({0, 0} and nullptr before one arrived).
  const std::set<Digest>* peer_holdings(const AgentKey& peer) const;
  std::pair<std::uint64_t, std::uint64_t> peer_holdings_version(const AgentKey& peer) const;
  // Jobs this agent runs now (fetching inputs or executing), rows restored at start not
  // yet decided, and runs being stopped (`stopping`), with their epochs.
  std::vector<OwnRun> running() const;
  std::uint64_t last_seq() const;

  struct Impl;  // core_internal.h

 private:
  Impl& enter();  // an input: asserts that no output waits for its signatures
  std::unique_ptr<Impl> impl_;
};

}  // namespace vow::promises
