// The simulated world the real agents run in (sim.h): one event queue and clock, and
// per host the effects an Agent (agent/agent.h) is given, simulated: a network that
// drops, duplicates, delays and partitions; a disk that can fill up; a worker whose
// queue can fill and whose work can be slow; a process table whose spawns can fail and
// whose processes can take their time to die and outlive the agent that started them.
//
// What survives an agent's crash lives in Host (its disk, store and processes); what
// dies with it is the Agent and the transfers and worker tasks of its incarnation.
// Private to tests/sim. Single-threaded.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "agent/effects.h"
#include "promises/core.h"
#include "tests/sim/sim.h"

namespace vow::sim {

class World;

inline Digest hash_of(std::initializer_list<std::string_view> parts) {
  Hasher h;
  for (auto p : parts) h.update_field(p);
  return h.finish();
}
inline std::string u64s(std::uint64_t v) { return std::to_string(v); }

inline constexpr std::int64_t kFaultWindowMs = 2'500;  // faults happen in [0, this)
// The per-author budget of statements that do not count (promises/limits.h), scaled
// down so that the hostile host's floods run out of it within a seed.
inline constexpr promises::IdleBudgetLimits kSimIdleBudget{400, 100};
// Meshes up to this size check the core's kept indexes against rebuilds after every
// decision pass (CoreConfig::check_backlogs), and every plan against one made without the
// definitions of the plan before (check_plans): the correctness runs; larger meshes are
// run for scale, where a rebuild per pass would dominate.
inline constexpr int kCheckIndexesUpTo = 20;

class SimClock final : public agent::Clock {
 public:
  explicit SimClock(const World* w) : w_(w) {}
  std::int64_t now_ms() const override;
  std::int64_t wall_ms() const override;

 private:
  const World* w_;
};

class SimNetwork final : public agent::Network {
 public:
  SimNetwork(World* w, int i) : w_(w), i_(i) {}
  void send(const AgentKey& to, const promises::Message& message) override;
  void broadcast(const promises::Message& message) override;
  void connect(const AgentKey& peer, const std::vector<std::string>& endpoints) override;
  void peer_dead(const AgentKey&) override {}  // no dialing to slow down here
  Result<std::uint64_t> fetch(const AgentKey& from, const Digest& digest) override;
  void cancel_fetch(std::uint64_t id) override;

 private:
  World* w_;
  int i_;
};

class SimDisk final : public agent::StateStore {
 public:
  SimDisk(World* w, int i) : w_(w), i_(i) {}
  Status persist(const std::vector<Statement>& statements) override;
  Status persist_proofs(const std::vector<Statement>& proofs) override;
  Status persist_voids(const std::vector<StatementRef>& slots) override;
  Status persist_retired(const std::vector<StatementRef>& retired) override;
  Status persist_index(const std::vector<store::ArtifactRecord>& rows) override;
  Status put_running_job(const store::RunningJob& row) override;
  Status remove_running_job(const Digest& job) override;
  bool defers_sync() const override;
  void request_sync(std::uint64_t ticket) override;
  bool sync_if_cheap(std::uint64_t ticket) override;

 private:
  // Applies a write now, or (deferred) once its sync completes.
  void write(std::function<void()> op);
  World* w_;
  int i_;
};

class SimWorker final : public agent::Worker {
 public:
  SimWorker(World* w, int i) : w_(w), i_(i) {}
  Status submit(Task task) override;

 private:
  World* w_;
  int i_;
};

class SimExecutor final : public agent::Executor {
 public:
  SimExecutor(World* w, int i) : w_(w), i_(i) {}
  Status create_work_dir(const promises::StartJob& start) override;
  Status materialize_inputs(const promises::StartJob& start) override;
  Status link_placed_inputs(const promises::StartJob& start, const PlacedSource& source) override;
  Result<std::int64_t> spawn(const promises::StartJob& start) override;
  void kill(const Digest& job) override;
  agent::Adoption adopt(const store::RunningJob& row, const promises::StartJob& start) override;
  void discard_leftover(const store::RunningJob& row) override;
  promises::JobOutcome collect(const promises::StartJob& start, const agent::ProcessExit& exit,
                               const std::string& error,
                               std::vector<store::ArtifactRecord>* index_rows) override;
  void remove_work_dir(const promises::StartJob& start) override;
  std::string work_dir(const promises::StartJob& start) const override;

 private:
  World* w_;
  int i_;
};

class SimSink final : public agent::ArtifactSink {
 public:
  SimSink(World* w, int i) : w_(w), i_(i) {}
  Result<agent::Received> store_received(const Digest& digest,
                                         std::optional<bool> is_tree) override;
  // As vowd's sink: the rows of the files stored are handed back when asked for, and
  // the objects are unindexed (Host::unindexed) until the agent commits them.
  std::vector<Result<agent::Received>> store_received_together(
      const std::vector<std::pair<Digest, std::optional<bool>>>& items,
      std::vector<store::ArtifactRecord>* rows) override;
  Status store_tree(const Digest& digest, const std::vector<TreeEntry>& entries) override;
  // A simulated file's bytes are sim_bytes(digest): bytes that are not are refused, as
  // the store refuses bytes that do not hash to their name.
  bool bytes_match(const Digest& digest, std::string_view bytes) override;
  void hold(const Digest& digest, std::string bytes) override;
  Status place(const Digest& digest, std::string_view bytes) override;
  std::optional<std::string> held_bytes(const Digest& digest, std::size_t max_bytes) override;

 private:
  World* w_;
  int i_;
};

// What a simulated file "holds": its digest's bytes, tagged.
std::string sim_bytes(const Digest& digest);

// A job's process: it outlives the agent that started it unless it dies with it.
struct Proc {
  Digest job;
  std::uint32_t epoch = 0;
  std::uint64_t token = 0;  // its "pid"
  bool exited = false;
  agent::ProcessExit exit;
  bool killed = false;
  bool watched = true;  // an agent incarnation waits for its exit
  int fail_pct = 0;     // its stage's flakiness (SIM_FAIL)
  bool always_fails = false;
};

// One simulated machine.
struct Host {
  int index = 0;
  AgentKey key;
  promises::CoreConfig config;
  bool provides_sources = false;
  int boots = 0;  // agents started on this host (each starts with full budgets, rule 6)
  // Survives a crash: the disk (statements, sequence, running-job table), the artifact
  // store, bytes received, processes.
  std::vector<Statement> persisted;
  std::vector<Statement> persisted_proofs;
  std::vector<VoidRange> persisted_voids;  // one slot each
  std::uint64_t persisted_seq = 0;
  std::map<Digest, store::RunningJob> running_table;
  std::set<Digest> store;
  // Fetched objects in the store whose index rows the agent has not committed yet
  // (StateStore::persist_index); an agent that starts indexes what it finds.
  std::set<Digest> unindexed;
  // Placed for a job ahead of being stored (ArtifactSink::place): not synced, so gone
  // after a crash unless stored since.
  std::set<Digest> placed;
  std::set<Digest> incoming;
  std::map<Digest, Proc> procs;
  // Per run started, its inputs whose index rows were not committed when the loop
  // started it: a worker that runs at once finds no row for them.
  std::map<Digest, std::set<Digest>> unindexed_at_start;
  // Own claims (job, epoch) committed by this incarnation, durable or not.
  std::set<std::pair<Digest, std::uint32_t>> committed_claims;
  // Dies with the agent.
  std::unique_ptr<agent::Agent> agent;
  bool up = false;
  std::uint64_t incarnation = 0;
  std::set<AgentKey> greeted;
  int worker_pending = 0;
  // Deferred durability (World::deferred_sync): writes committed but not yet durable,
  // then per requested ticket, applied to the disk above when the sync completes and
  // lost in a crash.
  std::vector<std::function<void()>> unsynced;
  std::map<std::uint64_t, std::vector<std::function<void()>>> sync_batches;
  // One sync at a time, as vowd's syncer: it covers every ticket requested before it
  // began; those requested meanwhile wait for the next one.
  bool sync_inflight = false;
  std::uint64_t sync_requested = 0;
  std::int64_t worker_free_at = 0;  // tasks run one after another
  int transfers = 0;
  std::map<std::uint64_t, bool> cancelled;  // transfer -> cancelled
  // Effects.
  std::unique_ptr<SimNetwork> net;
  std::unique_ptr<SimDisk> disk;
  std::unique_ptr<SimWorker> worker;
  std::unique_ptr<SimExecutor> exec;
  std::unique_ptr<SimSink> sink;
};

enum class EvType {
  kDeliver,
  kConnected,
  kTick,
  kFetchDone,
  kWorkerDone,
  kProcExit,
  kCrash,
  kRestart,
  kPartition,
  kHeal,
  kSourceUpdate,
  kLose,
  kForge,
  kDiskFull,
  kDiskOk,
  kHostile,
  kSynced,
};

struct Ev {
  explicit Ev(EvType t) : type(t) {}
  EvType type;
  int agent = -1;
  int from = -1;
  std::shared_ptr<const promises::Message> message;
  Digest id;  // job or artifact
  std::uint64_t incarnation = 0;
  std::uint64_t token = 0;  // process token or transfer id
  agent::Worker::Task task;
  bool wipe = false;
};

class World {
 public:
  explicit World(const SimOptions& o);
  SimResult run();
  // Membership measures (options.membership): a peer-state event logged by `observer`.
  void peer_state(const std::string& observer, const std::string& subject,
                  const std::string& state);

  // ---- for the effects (sim_effects.cc) ----
  std::int64_t now() const { return now_; }
  std::int64_t wall() const;
  Host& host(int i) { return hosts_[static_cast<std::size_t>(i)]; }
  int index_of(const AgentKey& key) const;
  const AgentKey& hostile_key() const { return hostile_key_; }
  bool hostile_serves(const Digest& d) const { return hostile_store_.count(d) != 0; }
  void note_tree_refused() { ++result_.trees_refused; }
  std::uint64_t rnd(std::uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  void schedule(std::int64_t at, Ev ev) { queue_.emplace(std::make_pair(at, next_id_++), ev); }
  void trace(const std::string& line);
  void fail(const std::string& what);
  void send(int from, int to, const std::shared_ptr<const promises::Message>& m);
  // A message an agent sends to every peer (counted once: SimResult::statement_broadcasts).
  void note_broadcast(const promises::Message& m);
  void connect_pair(int a, int b);
  std::uint64_t next_token() { return next_token_++; }
  const SimOptions& options() const { return opt_; }
  SimResult& result() { return result_; }
  const ArtifactRef* ref(const Digest& d) const;
  void add_ref(const ArtifactRef& r) { refs_[r.digest] = r; }
  void add_to_store(Host& h, const Digest& d);
  bool disk_full(int i) const { return disk_full_.count(i) != 0; }
  bool worker_squeezed() const { return squeeze_worker_; }
  bool slow_disk() const { return slow_disk_; }
  // The agents' disk commits return before they are durable (StateStore::defers_sync),
  // as vowd's do; in some seeds.
  bool deferred_sync() const { return deferred_sync_; }
  void start_sync(int i);
  bool spawn_faults() const { return spawn_faults_; }
  // Claims of crashed agents: job -> (crash time, agent), for failover figures.
  std::map<Digest, std::pair<std::int64_t, int>>& crashed_claims() { return crashed_claims_; }
  std::set<Digest>& claim_recorded() { return claim_recorded_; }

 private:
  // ---- setup ----
  void make_pipeline();
  void make_hosts();
  ArtifactRef src_ref() const;
  ArtifactRef cfg_ref() const;
  void schedule_faults();

  // ---- events ----
  void step(const Ev& ev);
  void deliver(const Ev& ev);
  void proc_exit(const Ev& ev);
  void crash(int i);
  void restart(int i, bool wipe);
  void boot(int i, promises::RestoredState restored, std::vector<store::RunningJob> recovered);
  void snapshot_sources(int i);
  void forge();
  void after_input(int i);
  // Whether H runs a process (a running-job row) whose claim is not durable.
  bool runs_unsynced_claim(const Host& h) const;

  // ---- the hostile host (sim_hostile.cc) ----
  void make_hostile();
  void hostile_act();
  // Its statements, validly signed, to agent `to` (-1: every agent).
  void hostile_send(const std::vector<Statement>& statements, int to,
                    std::vector<VoidRange> voids = {});
  Statement hostile_statement(StatementBody body);
  void check_hostile_end();
  // Stages a canonical result of the hostile host holds back (its own and every one
  // downstream): once it promised a stage (the tree bomb), its results there bind, and
  // nobody honest holds what they name; what is checked of them is that the bomb is
  // refused, never stored.
  std::set<std::string> poisoned_stages();

  // ---- invariants ----
  bool quiet();
  void check_end();
  // The job index (status counts, binding summary, pages) equals a recount.
  void check_job_index(int agent);
  bool holdings_converged();

  SimOptions opt_;
  std::mt19937_64 rng_;
  std::map<std::pair<std::int64_t, std::uint64_t>, Ev> queue_;
  std::uint64_t next_id_ = 0;
  std::int64_t now_ = 0;
  Hasher trace_;
  SimResult result_;
  SimClock clock_;
  std::shared_ptr<spdlog::logger> log_;

  promises::Pipeline pipeline_;
  std::vector<Host> hosts_;
  std::map<AgentKey, int> index_;  // host by key (every send looks one up)
  // Ledger fingerprints quiet() computed, per host, with what they were computed at
  // (agent started, ledger size, void slots, proofs): a ledger that did not change is
  // not read again.
  struct Fingerprint {
    int boots = 0;
    std::size_t size = 0, voids = 0, proofs = 0, retired = 0;
    Digest digest;
  };
  std::map<int, Fingerprint> fingerprints_;
  std::vector<int> side_;
  std::map<Digest, ArtifactRef> refs_;  // every artifact made: for tree entries
  int src_version_ = 0;
  int src_entries_ = 1;
  bool net_faults_ = false;
  bool has_nondet_ = false;
  bool squeeze_worker_ = false;
  bool slow_disk_ = false;
  bool deferred_sync_ = false;
  bool spawn_faults_ = false;
  std::set<int> disk_full_;
  std::uint64_t next_token_ = 1;
  std::vector<std::pair<AgentKey, std::uint64_t>> forged_;
  std::map<Digest, std::pair<std::int64_t, int>> crashed_claims_;
  std::set<Digest> claim_recorded_;
  std::int64_t heal_ms_ = 0;
  int unsynced_crashes_ = 0;  // SimOptions::crash_unsynced_runs
  int victim_ = -1;
  std::string unquiet_;  // why quiet() last said no
  std::set<int> detected_;
  // The hostile host: not an Agent, a trusted key (its statements check) that sends what
  // it likes, with a random source of its own (seeds without it run as before).
  bool hostile_ = false;
  std::mt19937_64 hostile_rng_;
  AgentKey hostile_key_;
  std::uint64_t hostile_seq_ = 0;
  // Artifacts the hostile host serves (its tree bomb), and the bomb's root.
  std::set<Digest> hostile_store_;
  std::optional<Digest> hostile_bomb_;
  std::string hostile_stage_;  // the stage it promised with the bomb
  bool hostile_equivocated_ = false;
  std::uint64_t hostile_equivocation_seq_ = 0;
};

// The simulator's signature: a keyed hash of the statement's wire encoding under a key
// derived from its author (Ed25519 itself is exercised by transport/ and the real
// meshes; here what matters is that the agent persists and relays signed forms and
// that a statement whose signature does not check is dropped before the agent).
SignedForm sim_sign(const Statement& st);
std::string sim_encode(const Statement& st);
void sim_sign_together(const AgentKey& author, const std::vector<SignedForm*>& forms);
bool sim_verify(const Statement& st);

}  // namespace vow::sim
