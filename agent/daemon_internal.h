// Daemon internals: vowd around one Agent (agent/agent.h). The daemon owns the agent's
// real effects and the loop that feeds it: daemon.cc (creation, the loop, reload,
// shutdown), daemon_net.cc (the Network over the transport: links, seeds, inbound),
// daemon_sources.cc (watched sources, serving stored objects), control.cc and
// queries.cc (the control socket, HTTP). Only the loop thread touches Impl, except the
// worker's stores, which belong to the background thread.
#pragma once

#include <spdlog/spdlog.h>
#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "agent/attest.h"
#include "agent/background.h"
#include "agent/daemon.h"
#include "agent/http.h"
#include "agent/fetch_sink.h"
#include "agent/local_effects.h"
#include "agent/slurm_executor.h"
#include "agent/service_notify.h"
#include "agent/wal_sync.h"
#include "promises/pipeline.h"
#include "store/artifact_store.h"
#include "store/ledger.h"
#include "transport/identity.h"
#include "transport/link.h"

namespace vow::agent {

// A control answer refusing a request: {"error": MESSAGE, "code": CODE}, CODE
// "not_found" when what was named does not exist, "invalid" for a malformed argument,
// else "failed" (docs/cli.md); the command line turns it into its exit status.
inline nlohmann::json error_answer(const Status& s) {
  const char* code = s.code() == StatusCode::kNotFound  ? "not_found"
                     : s.code() == StatusCode::kInvalid ? "invalid"
                                                        : "failed";
  return {{"error", s.message()}, {"code", code}};
}

// Limits (docs/agent.md).
inline constexpr int kLoopTickMs = 25;                // longest poll wait: the resolution of timers
inline constexpr std::int64_t kSeedRotateMs = 1'000;  // retry a seed endpoint with another key
inline constexpr std::int64_t kSourcePollMs = 5'000;  // watch = true: polling fallback
// The same with inotify watching the whole source: a walk only in case it missed one.
inline constexpr std::int64_t kSourceRescanMs = 300'000;
// Walks of everything no more than this share of one core: the next one waits at least
// this many times as long as the last took (a source of 100,000 files takes ~1 s).
inline constexpr std::int64_t kSourceRescanShare = 1'000;  // the safety net: 0.1%
inline constexpr std::int64_t kSourcePollShare = 20;       // polling, unwatched: 5%
inline constexpr std::int64_t kSourceWalkMaxMs = 6 * 3'600'000;  // spaced at most this far

// When the next walk of everything may come: `least_ms` after the last, or `share` times
// as long as it took, up to kSourceWalkMaxMs (and never sooner than `least_ms`).
inline std::int64_t source_walk_spacing(std::int64_t least_ms, std::int64_t share,
                                        std::int64_t took_ms) {
  const std::int64_t spaced = std::min(share * std::max<std::int64_t>(took_ms, 0), kSourceWalkMaxMs);
  return std::max(least_ms, spaced);
}
inline constexpr std::int64_t kSourceSettleMs = 100;  // after an inotify event, then check
inline constexpr std::size_t kMaxWatches = 10'000;    // inotify watches (directories)
// Directories of one source named as changed for its next check; past it, a full walk.
inline constexpr std::size_t kMaxChangedDirs = 10'000;
inline constexpr std::size_t kMaxControlBytes = 1 << 20;
inline constexpr std::size_t kMaxLogTailBytes = 4096;
inline constexpr std::int64_t kHttpRefreshMs = 500;
// The HTTP snapshot is made again when what it shows changed (http_snapshot_key), at
// most every kHttpRefreshMs, and at least this often (for the times and traffic counters
// in it, which the key leaves out; well within HttpServer::kStaleAfterMs).
inline constexpr std::int64_t kHttpMaxAgeMs = 5'000;
// The worker copies the ledger's write-ahead log back into the database this often (the
// loop's connection never does: docs/storage.md).
inline constexpr std::int64_t kCheckpointMs = 1'000;
// The group commit's sync off the loop (WalSyncer, docs/agent.md "Durability off the
// loop"); false syncs every commit on the loop, as the simulator's --sync-on-loop.
inline constexpr bool kDeferSync = true;
// A log larger than this is emptied (a TRUNCATE checkpoint, which waits for the loop's
// current commit).
inline constexpr std::int64_t kWalTruncateBytes = 4 << 20;
// A loop turn this long is logged with where its time went.
inline constexpr std::int64_t kSlowTurnMs = 200;    // /metrics and /api/status snapshots
// `vow jobs`: jobs in one answer (the command line asks page after page).
inline constexpr std::size_t kMaxJobsPage = 1'000;
// `vow status`: a stage's canonical results are listed up to this many jobs; beyond,
// `results_omitted` counts them (`vow jobs --stage S --state done` lists them).
inline constexpr std::size_t kMaxStatusResults = 100;
// Control requests served in one turn of the loop stop after this long (the rest wait
// for the next turn), so that heartbeats and statements are never held up by queries.
inline constexpr std::int64_t kControlBudgetMs = 20;
inline constexpr std::int64_t kShutdownFlushMs = 200;  // links carry the releases out
// Links back off no longer than this, nor than the peers' suspicion window: a restarted
// peer must hear us again before it suspects us (ZeroMQ's default cap is 2 s).
inline constexpr std::int64_t kMinReconnectMs = 100;
inline constexpr std::int64_t kMaxReconnectMs = 2'000;

inline constexpr std::size_t kMaxGcAnswers = 16;  // `vow gc` answers kept for their tickets
// vow_artifact_bytes counted again this often while this agent's holdings change, and
// at least every kArtifactRecountMs.
inline constexpr std::int64_t kArtifactCountMs = 10'000;
inline constexpr std::int64_t kArtifactRecountMs = 300'000;

struct GcPass {
  std::uint64_t ticket = 0;
  bool dry_run = false;
  bool periodic = false;  // the timer's: removes what two passes in a row found unreferenced
  std::string stamp;      // Core::retention_stamp() when it began (periodic passes)
};
struct GcState {
  std::deque<GcPass> queue;
  bool running = false;
  std::uint64_t tickets = 0;
  std::map<std::uint64_t, nlohmann::json> answers;  // finished passes, the latest
  std::set<Digest> candidates;  // stored and unreferenced at the previous periodic pass
  std::int64_t next_ms = 0;
  bool counting = false;         // a count of the store's bytes is on the worker
  std::int64_t next_count_ms = 0;
  std::int64_t counted_ms = 0;                              // when the last count began
  std::pair<std::uint64_t, std::uint64_t> counted_at{0, 0};  // holdings version then
  // The stamp of the last periodic pass if it found nothing to remove and nothing newly
  // unreferenced: while the core's stamp stays the same (and no fetch is in flight), the
  // next would find the same, so it is not made (an idle agent at 100,000 jobs spent
  // seconds of CPU on each).
  std::string idle_stamp;
  std::uint64_t passes_made = 0;
  std::uint64_t passes_skipped = 0;
  bool bytes_known = false;      // the store's bytes were counted
  std::uint64_t bytes_held = 0;  // object bytes in the store, as last counted
  std::uint64_t collected_bytes = 0;
  std::uint64_t collected_objects = 0;
};

// What the background thread owns: the artifact store and its own ledger connection.
struct WorkerStores {
  std::unique_ptr<store::LedgerStore> index;
  std::unique_ptr<store::ArtifactStore> artifacts;
};

// A source's import cache (store/import_cache.h), kept in STATE_DIR/sources/: loaded,
// used and saved on the worker thread only, while the source's `importing` is set.
struct SourceCacheSlot {
  std::unique_ptr<store::ImportCache> cache;  // null until the first check loads it
};

struct WatchedSource {
  promises::SourceDecl decl;
  std::string path;  // absolute
  std::shared_ptr<SourceCacheSlot> cache = std::make_shared<SourceCacheSlot>();
  bool snapshotted = false;        // a check has imported it since the agent started
  std::optional<Digest> reported;  // the snapshot last given to the core
  // Its file objects, sorted (SourceCheck::files): shared with the next check's plan, not
  // copied on the loop.
  std::shared_ptr<const std::vector<Digest>> reported_files;
  bool importing = false;
  std::int64_t next_check_ms = 0;
  // Checks asked for by `vow wait` (tickets increase): the latest asked, the latest a
  // check was started for, the latest a finished check was started for. A check started
  // after a ticket was asked sees the files as they were at the request or later.
  std::uint64_t refresh_asked = 0;
  std::uint64_t refresh_started = 0;
  std::uint64_t refresh_done = 0;
  // Health (vow status, /metrics): the latest check's error, empty once a check
  // imported it; when that error was first seen, and when a check last imported it
  // (wall clock, ms since the epoch; 0 never).
  std::string error;
  std::int64_t error_since_ms = 0;
  std::int64_t last_ok_ms = 0;
  // What inotify said since the last check was started (docs/agent.md, "Sources"): the
  // directories, relative to the source, in which an entry changed; those created or
  // moved in (watched, with every directory under them, by the next check); or that
  // everything must be walked (events lost, a watch lost, the source itself replaced).
  store::ChangedDirs changed_dirs;
  std::set<std::string> new_dirs;
  bool walk_all = true;  // the first check after a start walks everything
  // Every directory of the source has a watch; else each check walks everything.
  bool watched = false;
  std::int64_t next_full_walk_ms = 0;      // the safety net's next walk of everything
  std::map<std::string, int> dir_watches;  // directory relative to the source -> watch
};

// Watches a check adds on the worker, handed to the loop with its result.
struct WatchesAdded {
  // Watch descriptor and directory relative to the source ("" for the source itself).
  std::vector<std::pair<int, std::string>> dirs;
  int parent = -1;       // on the source's parent, for its name (added by a full walk)
  bool complete = true;  // every directory found has its watch
};

// What one check of a source did, handed from the worker to the loop.
struct SourceCheck {
  Result<ArtifactRef> ref = Status::invalid("not checked");
  store::ImportStats stats;
  std::vector<std::string> notes;  // the cache dropped or not saved: for the log
  // Small files new in the snapshot, to go with its version (new_small_files).
  std::vector<promises::Attached> attached;
  // The snapshot's file objects, sorted (file_digests), made on the worker.
  std::shared_ptr<const std::vector<Digest>> files;
  WatchesAdded watches;
  bool full = false;      // it walked everything
  std::int64_t took_ms = 0;  // on the worker, wall time
  // A partial walk changed the cache and did not write its file: the loop has it written
  // by a task of its own, after the snapshot is handed over (finish_source_check).
  bool unsaved = false;
};

// An inotify watch: on a directory of a source (relative to it, "" for the source), or
// on the source's parent, for the source's own name (`only`).
struct SourceWatch {
  std::size_t source = 0;
  std::string only;
  std::string relative;
  bool deleted = false;  // IN_DELETE_SELF seen: the IN_IGNORED that follows is no loss
};

// The agent's links: the transport, and which peer is at which endpoint.
class DaemonNetwork final : public Network {
 public:
  explicit DaemonNetwork(Daemon::Impl* d) : d_(d) {}
  void send(const AgentKey& to, const promises::Message& message) override;
  void broadcast(const promises::Message& message) override;
  void connect(const AgentKey& peer, const std::vector<std::string>& endpoints) override;
  void peer_dead(const AgentKey& peer) override;
  Result<std::uint64_t> fetch(const AgentKey& from, const Digest& digest) override;
  void cancel_fetch(std::uint64_t id) override;

 private:
  Daemon::Impl* d_;
};

// Real time across the phases of one loop turn (for the slow-turn log).
class TurnClock {
 public:
  TurnClock() : start_(real_time_us()), last_(start_) {}
  void lap(const char* what) {
    std::int64_t t = real_time_us();
    laps_.emplace_back(what, t - last_);
    last_ = t;
  }
  std::int64_t total_us() const { return last_ - start_; }
  const std::vector<std::pair<const char*, std::int64_t>>& laps() const { return laps_; }

 private:
  std::int64_t start_, last_;
  std::vector<std::pair<const char*, std::int64_t>> laps_;
};

struct Daemon::Impl {
  // Set once in create().
  DaemonOptions options;
  promises::AgentConfig config;
  std::vector<promises::Pipeline> pipelines;
  // Stage definitions this agent loaded before its last reload (by digest): a job of
  // an edited stage that finishes after a SIGHUP is attested by its own definition.
  std::map<Digest, promises::Stage> retired_stages;
  std::string state_dir;
  std::string bwrap;  // the sandbox jobs run in (agent/sandbox.h); empty: none
  std::string bwrap_problem;  // why bwrap is empty
  JobCgroups job_cgroups;  // how jobs' limits are applied (agent/job_cgroup.h)
  std::optional<transport::Identity> identity;  // set in create()
  transport::TrustSet trust;
  std::shared_ptr<spdlog::logger> log;

  std::unique_ptr<store::LedgerStore> ledger;  // loop thread's connection
  std::unique_ptr<WalSyncer> syncer;           // makes its commits durable (kDeferSync only)
  std::unique_ptr<WorkerStores> worker;        // background thread's
  std::unique_ptr<Background> background;
  std::unique_ptr<transport::Transport> transport;
  std::unique_ptr<transport::ArtifactProvider> provider;

  // The agent and its effects.
  SystemClock clock;
  std::unique_ptr<SqliteState> state;
  std::unique_ptr<LocalExecutor> local_executor;
  std::unique_ptr<SlurmExecutor> slurm_executor;  // when the agent file has [slurm]
  std::unique_ptr<JobExecutors> executor;         // each run to its promise's executor
  // Small fetched artifacts, from the network's sinks to the worker's StoreSink.
  ReceivedInMemory received;
  std::unique_ptr<StoreSink> sink;
  std::uint64_t spawned_before_turn = 0;  // LocalExecutor::spawned() at the turn's start
  std::unique_ptr<DaemonNetwork> network;
  std::unique_ptr<Agent> agent;

  // The transport's replay check: highest contiguous sequence per author stored.
  class Sequences;
  std::unique_ptr<transport::SequenceView> sequences;

  // Peers: keys known to be at an endpoint, and seed endpoints still unidentified.
  std::map<AgentKey, std::string> peer_endpoint;
  std::set<AgentKey> greeted;  // the agent was told the peer is connected
  std::vector<std::string> unmapped_seeds;
  std::int64_t next_seed_rotation_ms = 0;
  std::size_t seed_rotation = 0;

  // Control socket (plain ZeroMQ ROUTER on ipc:// in the state directory).
  void* control_ctx = nullptr;
  void* control = nullptr;
  // The control socket's ZMQ_FD: readable when the socket's state may have changed, and
  // not again until a receive finds nothing more (serve_control); `control_unread`
  // until then (set at start, when the descriptor fires, and while the budget of a
  // turn leaves requests unread).
  int control_fd = -1;
  bool control_unread = true;
  // The descriptors that fired in the last wait: the transport's epoll set, the
  // worker's and the syncer's eventfds, inotify (all true before the first wait).
  bool transport_signalled = true;
  bool background_signalled = true;
  bool synced_signalled = true;
  bool inotify_signalled = true;
  // The executor's descriptors (job hosts' sockets, pidfds) that fired in the last wait:
  // a job host's socket is read only then (JobExecutors::reap).
  std::vector<int> executor_fired;
  std::string control_endpoint;
  int signal_fd = -1;
  bool stopping = false;
  int exit_code = 0;

  std::unique_ptr<HttpServer> http;  // [agent] http; serves snapshots
  std::int64_t next_http_publish_ms = 0;
  std::int64_t http_published_ms = 0;  // when the snapshot served was made
  std::uint64_t http_key = 0;          // http_snapshot_key() then
  std::uint64_t http_snapshots = 0;    // made so far (vow_http_snapshots_total)
  ServiceNotifier notifier;  // systemd Type=notify: READY, RELOADING, STOPPING, WATCHDOG

  GcState gc;  // gc.cc

  // Loop turns of kSlowTurnMs or more, and the longest turn (metrics).
  bool checkpointing = false;  // a checkpoint task is on the worker
  std::int64_t next_checkpoint_ms = 0;
  std::uint64_t slow_turns = 0;
  std::int64_t turn_max_us = 0;

  std::vector<WatchedSource> sources;
  std::uint64_t refresh_tickets = 0;  // the last ticket `wait` handed out
  // Checks done while the agent was held whose new version is still queued for the core:
  // (source, ticket), counted done once the agent is released (a `wait` answered before
  // would see the plan without the change, and say done).
  std::vector<std::pair<std::size_t, std::uint64_t>> refreshed_at_release;
  // Artifacts `vow get` found corrupt here: checked on the worker, then fetched again
  // (requests.cc, repair_json); `resolve` says `repairing` meanwhile.
  std::set<Digest> repairing;
  int inotify_fd = -1;
  // By watch descriptor; one watch may serve several sources (a shared parent).
  std::multimap<int, SourceWatch> watches;
  // Checks in flight that add watches on the worker, and the watch descriptors events
  // came for meanwhile that no watch known here has (a watch just added, not yet
  // handed over): placed when the check hands its watches over (at most kMaxWatches).
  std::size_t watch_checks = 0;
  std::set<int> stray_watches;

  promises::Core& core() { return agent->core(); }
  const promises::Core& core() const { return agent->core(); }
  std::int64_t now_ms() const { return clock.now_ms(); }
  std::int64_t wall_ms() const { return clock.wall_ms(); }

  // ---- daemon.cc ----
  // Decides how jobs run ([agent] sandbox): sets `bwrap`, or refuses when it must.
  void warn_unenforced_limits();
  Status choose_sandbox();
  // Decides how jobs' limits are applied ([agent] job_limits): sets `job_cgroups`, and
  // says once in the log which and why; refuses to start when "cgroups" cannot be.
  Status choose_job_limits();
  Status open_stores();
  Status restore(promises::RestoredState* restored, std::vector<store::RunningJob>* recovered);
  Status open_transport();
  void make_agent(promises::RestoredState restored, std::vector<store::RunningJob> recovered);
  int loop();
  void poll_once();
  void note_turn(const TurnClock& turn, std::size_t messages);
  void checkpoint_tick(std::int64_t now);
  void take_synced();  // feeds the agent what the syncer made durable
  void on_signals();
  void shutdown();
  void reload();  // SIGHUP
  // /readyz: the agent hears a peer, or trusts no other agent (docs/operations.md).
  // False with the reason otherwise.
  bool ready(std::string* reason) const;
  // What peers are told to connect to: [agent] advertise, else the bound endpoint.
  std::string advertised_endpoint() const;

  // ---- daemon_net.cc ----
  void handle_inbound(transport::Inbound& in);
  void greet(const AgentKey& peer);
  void connect_peer(const AgentKey& peer, const std::string& endpoint);
  void connect_seeds();
  void rotate_seeds();

  // ---- daemon_sources.cc ----
  void start_sources();
  void poll_sources();
  void on_inotify();
  void start_source_check(std::size_t i, std::int64_t now);
  // On the loop, with what the worker's check found.
  void place_watches(std::size_t i, const WatchesAdded& added, bool full);
  void finish_source_check(std::size_t i, const SourceCheck& check, std::uint64_t ticket);
  // One inotify event on WATCH (descriptor WD), a watch known here.
  void on_source_event(SourceWatch& watch, int wd, std::uint32_t mask, const std::string& name);
  // Something changed in the directory RELATIVE of source I (created: RELATIVE is new).
  void mark_source_dir(std::size_t i, const std::string& relative, bool created);
  void walk_all_of(std::size_t i);
  // At the stop, with the worker joined: writes the import caches that changed since
  // they were last saved.
  void save_source_caches();
  // After a partial walk changed a source's cache: its file written by a worker task of
  // its own, once the snapshot has been handed over.
  void save_source_cache(std::size_t i);
  // Drops the watches on RELATIVE and every directory under it (moved away).
  void unwatch_source_dirs(std::size_t i, const std::string& relative);

  // ---- control.cc ----
  Status open_control();
  void serve_control();
  // `remote`: asked by a client key over CURVE (questions only), not the local socket.
  nlohmann::json control_request(const std::string& method, const nlohmann::json& args,
                                 bool remote = false);
  nlohmann::json status_json();
  nlohmann::json agents_json();    // this agent and its peers, as status reports them
  nlohmann::json rejected_json();  // drops and refusals by reason
  nlohmann::json sources_json();   // the sources this agent provides and their health
  std::string metrics_text();
  // A digest of what the HTTP snapshot shows but times and frame counts: equal while an
  // idle agent's snapshot would be the same but for those (docs/agent.md, "HTTP").
  std::uint64_t http_snapshot_key(bool ready, const std::string& why);

  // ---- gc.cc ----
  std::uint64_t queue_gc(bool dry_run, bool periodic);
  void gc_tick(std::int64_t now);
  void gc_tick_pass(std::int64_t now);  // the periodic pass, when due
  std::vector<Digest> gc_keep();  // ascending, no repeats
  void run_next_gc();
  void gc_found(const GcPass& pass, const Status& status, const std::vector<Digest>& removed,
                const std::vector<std::uint64_t>& sizes, std::uint64_t total,
                const std::set<Digest>& unreferenced, bool nothing_new);
  void gc_answer(std::uint64_t ticket, nlohmann::json answer);
  nlohmann::json gc_json(const nlohmann::json& args);

  // ---- queries.cc ----
  std::string agent_name(const AgentKey& key) const;
  nlohmann::json agent_ref(const AgentKey& key) const;
  Result<Digest> resolve_job(const std::string& text);
  Result<std::vector<Digest>> resolve_artifact(const std::string& text);
  const Statement* producer_of(const Digest& digest);
  nlohmann::json job_json(const promises::JobView& view, bool detail);
  nlohmann::json jobs_json(const nlohmann::json& args);
  nlohmann::json peers_json();
  nlohmann::json promises_json();
  nlohmann::json lineage_json(const nlohmann::json& args);
  nlohmann::json why_json(const nlohmann::json& args);
  nlohmann::json resolve_json(const nlohmann::json& args);
  nlohmann::json fetch_json(const nlohmann::json& args);
  nlohmann::json verify_json();

  // ---- provenance.cc (docs/provenance.md) ----
  // A stage definition by digest: this agent's files (current, then retired), else any
  // definition the mesh published. nullptr if none is known.
  const promises::Stage* stage_definition(const Digest& stage_digest);
  // For CoreConfig::attest: signs the attestation of an own result or source version.
  void attest_own_statement(Statement& st);
  // The attestation of a result or source version held in the ledger, checked.
  Result<Attestation> attestation(const Statement& st);
  // The attestations of the steps behind a result (args: ref), with the keys to check them.
  nlohmann::json attest_json(const nlohmann::json& args);

  // ---- web_queries.cc: what the web view reads (agent/web.h) ----
  nlohmann::json web_json(const std::string& method, const nlohmann::json& args);
  nlohmann::json web_pipelines_json();
  nlohmann::json web_stage_json(const nlohmann::json& args);
  nlohmann::json web_verify_json(const nlohmann::json& args);
  nlohmann::json web_mesh_json();

  // ---- requests.cc ----
  nlohmann::json retry_json(const nlohmann::json& args);
  nlohmann::json wait_json(const nlohmann::json& args);
  // args {"digest"}: an artifact a reader found corrupt in this agent's store. The
  // worker hashes every object of it and removes those that do not match (and the trees
  // above them); then it is fetched again from another holder.
  nlohmann::json repair_json(const nlohmann::json& args);
  // Asks for a fresh check of the watched sources this agent provides for `pipeline`;
  // the ticket to pass to sources_checked.
  std::uint64_t refresh_sources(const std::string& pipeline);
  bool sources_checked(const std::string& pipeline, std::uint64_t ticket) const;
};

// Reads exactly out.size() bytes at `offset` (kIo naming `what` on error or end of file).
Status pread_full(int fd, std::uint64_t offset, std::span<std::uint8_t> out,
                  const std::string& what);

// Serves this agent's stored objects to peers' fetches.
std::unique_ptr<transport::ArtifactProvider> make_store_provider(const std::string& state_dir);

}  // namespace vow::agent
