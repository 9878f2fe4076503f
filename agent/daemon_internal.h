// Daemon internals, shared by daemon.cc (loop, persist, send), daemon_jobs.cc (the
// executor), daemon_artifacts.cc (fetch, replication, sources) and control.cc. Only
// the loop thread touches Impl, except `Worker`, which belongs to the background thread.
#pragma once

#include <spdlog/spdlog.h>
#include <zmq.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/background.h"
#include "agent/daemon.h"
#include "agent/http.h"
#include "agent/job_layout.h"
#include "agent/metrics.h"
#include "agent/process.h"
#include "promises/core.h"
#include "promises/pipeline.h"
#include "store/artifact_store.h"
#include "store/ledger.h"
#include "transport/identity.h"
#include "transport/link.h"

namespace vow::agent {

// Limits (docs/agent.md).
inline constexpr int kLoopTickMs = 25;                // longest poll wait: the resolution of timers
inline constexpr std::int64_t kSeedRotateMs = 1'000;  // retry a seed endpoint with another key
inline constexpr std::int64_t kSourcePollMs = 5'000;  // watch = true: polling fallback
inline constexpr std::int64_t kSourceSettleMs = 100;  // after an inotify event, then check
inline constexpr std::size_t kMaxWatches = 10'000;    // inotify watches (directories)
inline constexpr std::size_t kMaxStash = 100'000;     // signed statements awaiting persist
inline constexpr std::size_t kMaxControlBytes = 1 << 20;
inline constexpr std::size_t kMaxLogTailBytes = 4096;
inline constexpr std::int64_t kHttpRefreshMs = 500;  // /metrics and /api/status snapshots
// Bounds of the links' reconnect backoff cap, which follows suspect_after: a restarted
// peer must hear us again before it suspects us (ZeroMQ's default cap is 2 s).
inline constexpr std::int64_t kReconnectCapMinMs = 100;
inline constexpr std::int64_t kReconnectCapMaxMs = 2'000;

// What the background thread owns: the artifact store and its own ledger connection.
struct Worker {
  std::unique_ptr<store::Ledger> index;
  std::unique_ptr<store::ArtifactStore> artifacts;
  std::string state_dir;
};

// A job this agent is running.
struct Job {
  promises::StartJob start;
  JobLayout layout;
  std::optional<JobProcess> process;  // empty while inputs are being materialized
  std::int64_t started_unix_ms = 0;
  std::int64_t started_mono_ms = 0;
  std::int64_t deadline_mono_ms = 0;  // 0: no timeout
  bool killed = false;                // fenced or cancelled: its exit is not a result
  bool timed_out = false;
};

// A transfer of an artifact (a file, or a tree and then its children) to this agent.
struct Fetch {
  Digest digest;
  std::vector<AgentKey> holders;  // best first
  std::size_t holder = 0;         // the one being tried
  std::optional<bool> is_tree;    // from the ledger's references, when known
  std::uint64_t stream_id = 0;
  std::set<Digest> waiting_children;  // a tree waits for these before it is stored
  std::optional<std::vector<TreeEntry>> tree_entries;
  std::string part_path;        // where the bytes arrive
  std::vector<Digest> parents;  // trees waiting for this one
  bool replicate = false;
  // The core asked for this artifact itself (not only as a child of a tree): it is told
  // the outcome even when the fetch also serves a tree.
  bool for_core = false;
};

struct WatchedSource {
  promises::SourceDecl decl;
  std::string path;  // absolute
  std::string fingerprint;
  bool importing = false;
  std::int64_t next_check_ms = 0;
};

struct Daemon::Impl {
  // Set once in create().
  DaemonOptions options;
  promises::AgentConfig config;
  std::vector<promises::Pipeline> pipelines;
  std::string state_dir;
  std::optional<transport::Identity> identity;  // set in create()
  transport::TrustSet trust;
  std::shared_ptr<spdlog::logger> log;

  std::unique_ptr<store::Ledger> ledger;  // loop thread's connection
  std::unique_ptr<Worker> worker;         // background thread's
  std::unique_ptr<Background> background;
  std::unique_ptr<transport::Transport> transport;
  std::unique_ptr<promises::Core> core;

  // Highest contiguous sequence per author held: the transport's replay check.
  class Sequences;
  std::unique_ptr<transport::SequenceView> sequences;
  VersionVector vv;

  // Signed forms of statements received and not yet persisted (the core returns values).
  std::map<std::pair<AgentKey, std::uint64_t>, transport::SignedStatement> stash;
  // Signed forms of statements persisted in this batch (sent right after).
  std::map<std::pair<AgentKey, std::uint64_t>, transport::SignedStatement> fresh;
  // Artifact kinds as referenced by statements (fetches must know file from tree).
  std::map<Digest, bool> is_tree;

  std::map<Digest, Job> jobs;
  // Rows of the running-job table found at start (what adopting their process needs),
  // until the core resumes (StartJob) or kills (KillJob) each of them.
  std::map<Digest, store::RunningJob> recovered;
  // Killed runs now gone, to report to the core (job_stopped) from the loop, not from
  // inside the carrying out of another output. At most one entry per killed run.
  std::vector<std::pair<Digest, std::uint32_t>> stopped_runs;
  std::map<Digest, Fetch> fetches;
  std::map<std::uint64_t, Digest> fetch_by_stream;
  // Fetches waiting for one of the transport's max_receiving places (each digest at
  // most once, as `fetches` holds it): started as earlier fetches end.
  std::deque<Digest> fetch_queue;
  std::vector<WatchedSource> sources;

  // Peers: keys known to be at an endpoint, and seed endpoints still unidentified.
  std::map<AgentKey, std::string> peer_endpoint;
  std::set<AgentKey> greeted;  // peer_connected sent to the core
  std::vector<std::string> unmapped_seeds;
  std::int64_t next_seed_rotation_ms = 0;
  std::size_t seed_rotation = 0;

  // Control socket (plain ZeroMQ ROUTER on ipc:// in the state directory).
  void* control_ctx = nullptr;
  void* control = nullptr;
  std::string control_endpoint;
  int signal_fd = -1;
  bool stopping = false;
  int exit_code = 0;

  // Counters for status and metrics.
  std::uint64_t statements_in = 0;
  std::uint64_t statements_persisted = 0;
  std::uint64_t duplicates_dropped = 0;
  std::uint64_t jobs_started = 0;
  std::uint64_t jobs_adopted = 0;
  Metrics metrics;
  std::unique_ptr<HttpServer> http;  // [agent] http; serves snapshots
  std::int64_t next_http_publish_ms = 0;

  // ---- daemon.cc ----
  std::int64_t now_ms() const;
  static std::int64_t wall_ms();
  void carry_out(promises::Output out);
  Status persist(const std::vector<Statement>& statements);
  void send(const promises::Outbound& out);
  void act(promises::Action& action);
  void log_events(const std::vector<promises::Event>& events);
  void handle_inbound(transport::Inbound& in);
  void greet(const AgentKey& peer);
  void connect_peer(const AgentKey& peer, const std::string& endpoint);
  void rotate_seeds();
  void remember_refs(const Statement& st);
  int loop();
  void shutdown();
  void reload();  // SIGHUP

  // ---- daemon_jobs.cc ----
  void start_job(promises::StartJob start);
  void kill_job(const promises::KillJob& kill);
  void report_stopped_runs();
  void check_jobs();
  void job_finished(const Digest& job, ExitStatus status);
  std::vector<promises::RunningJob> recover_running_jobs(const std::vector<Statement>& statements);
  void spawn_job(const Digest& id);
  void finish_job(const Digest& id, promises::JobOutcome outcome);

  // ---- daemon_artifacts.cc ----
  void fetch_artifact(const Digest& digest, std::vector<AgentKey> holders, bool replicate,
                      bool for_core = true);
  void start_queued_fetches();
  void abandon_fetches_from(const AgentKey& peer);
  void fetch_next_holder(Fetch& f, const Status& why);
  void on_fetch_outcome(const transport::FetchOutcome& outcome);
  void fetch_stored(const Digest& digest, const Status& status);
  void store_fetched(const Digest& digest);
  std::unique_ptr<transport::ArtifactProvider> provider;
  void start_sources();
  void poll_sources();
  void watch_source_dirs();
  void on_inotify();
  int inotify_fd = -1;
  // Watch descriptor -> (source index, name of the source in the watched directory
  // when the watch is on its parent, else empty).
  std::map<int, std::pair<std::size_t, std::string>> watches;

  // ---- control.cc ----
  Status open_control();
  void serve_control();
  nlohmann::json control_request(const std::string& method, const nlohmann::json& args);
  nlohmann::json status_json();
  std::string metrics_text();

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
};

// Serves this agent's stored objects to peers' fetches.
std::unique_ptr<transport::ArtifactProvider> make_store_provider(const std::string& state_dir);

// A statement as the store keeps it.
store::StoredStatement to_stored(const Statement& st, const transport::SignedStatement& signed_st,
                                 std::int64_t received_unix_ms);

}  // namespace vow::agent
