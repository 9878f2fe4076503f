// The effects of an agent in vowd (agent/effects.h): the system clock, the SQLite
// ledger, the artifact store and job processes on this host. The network is the
// daemon's (agent/daemon_net.cc); the worker is agent/background.h.
//
// Ownership: each borrows what it is given (ledger, store) and must not outlive it.
// Thread-safety: as effects.h says per call. The store given to LocalExecutor and
// StoreSink is the worker's: only their worker calls touch it.
#pragma once

#include <unistd.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "agent/effects.h"
#include "agent/fetch_sink.h"
#include "agent/job_cgroup.h"
#include "agent/job_host.h"
#include "agent/running_journal.h"
#include "agent/process.h"
#include "agent/sandbox.h"
#include "agent/wal_sync.h"
#include "store/artifact_store.h"
#include "store/ledger.h"

namespace vow::agent {

class SystemClock final : public Clock {
 public:
  std::int64_t now_ms() const override;
  std::int64_t wall_ms() const override;
};

// Statements and the running-job table in the agent's SQLite ledger.
class SqliteState final : public StateStore {
 public:
  // `syncer`: the ledger connection commits without syncing and the syncer makes its
  // commits durable (defers_sync); nullptr: each commit syncs.
  // `journal`: where runs are noted at their start (note_running_job); "": their rows
  // are written at once.
  SqliteState(store::LedgerStore* ledger, const AgentKey& self, const Clock* clock,
              WalSyncer* syncer = nullptr, const std::string& journal = "")
      : ledger_(ledger), self_(self), clock_(clock), syncer_(syncer) {
    if (!journal.empty()) journal_ = std::make_unique<RunningJournal>(journal);
  }
  Status persist(const std::vector<Statement>& statements) override;
  Status persist_proofs(const std::vector<Statement>& proofs) override;
  Status persist_voids(const std::vector<StatementRef>& slots) override;
  Status persist_retired(const std::vector<StatementRef>& retired) override;
  // One ledger transaction (store::LedgerStore::write_together).
  Status persist_together(const std::function<Status()>& fn) override;
  Status persist_index(const std::vector<store::ArtifactRecord>& rows) override;
  bool defers_sync() const override { return syncer_ != nullptr; }
  bool sync_if_cheap(std::uint64_t ticket) override;
  void request_sync(std::uint64_t ticket) override;
  Status put_running_job(const store::RunningJob& row) override;
  Status remove_running_job(const Digest& job) override;
  Status note_running_job(const store::RunningJob& row) override;
  void running_rows_settled() override;
  // Highest contiguous sequence per author stored (the transport's replay check). Read
  // from the ledger once (load_version_vector), then kept up to date in memory from the
  // frontiers each commit moved.
  const VersionVector& version_vector() const { return vv_; }
  Status load_version_vector();

 private:
  store::LedgerStore* ledger_;
  VersionVector vv_;
  bool grouped_ = false;  // inside persist_together
  AgentKey self_;
  const Clock* clock_;
  WalSyncer* syncer_;
  std::unique_ptr<RunningJournal> journal_;
};

// A statement as the store keeps it.
store::StoredStatement to_stored(const Statement& st, std::int64_t received_unix_ms);

// Jobs as processes on this host, each in its own work directory under the state
// directory (agent/job_layout.h), under a supervisor that records its exit status; a
// job with limits in a cgroup of its own where the host allows (agent/job_cgroup.h).
class LocalExecutor final : public Executor {
 public:
  // `bwrap`: the bubblewrap program jobs run under (agent/sandbox.h); empty: none.
  // `cgroups`: where jobs' cgroups are made (agent/job_cgroup.h); none: the rlimits.
  // `job_host`: the program run as the job host (agent/job_host.h), `PROGRAM job-host`;
  // empty: every job gets a supervisor shell of its own.
  LocalExecutor(std::string state_dir, store::ArtifactStore* worker_store, std::string bwrap = "",
                JobCgroups cgroups = {}, std::string job_host = "")
      : state_dir_(std::move(state_dir)),
        store_(worker_store),
        bwrap_(std::move(bwrap)),
        cpus_(allowed_cpus()),
        cgroups_(std::move(cgroups)),
        job_host_exe_(std::move(job_host)) {}
  Status create_work_dir(const promises::StartJob& start) override;
  Status materialize_inputs(const promises::StartJob& start) override;
  Status link_placed_inputs(const promises::StartJob& start, const PlacedSource& source) override;
  Result<std::int64_t> spawn(const promises::StartJob& start) override;
  void kill(const Digest& job) override;
  Adoption adopt(const store::RunningJob& row, const promises::StartJob& start) override;
  void discard_leftover(const store::RunningJob& row) override;
  std::string refused_outputs(const promises::StartJob& start) override;
  promises::JobOutcome collect(const promises::StartJob& start, const ProcessExit& exit,
                               const std::string& error,
                               std::vector<store::ArtifactRecord>* index_rows) override;
  void remove_work_dir(const promises::StartJob& start) override;
  std::string work_dir(const promises::StartJob& start) const override;
  // Spare work directories held (at most kSpareWorkDirs).
  std::size_t spare_work_dirs() const { return spare_dirs_.size(); }
  static constexpr std::size_t kSpareWorkDirs = 16;
  // Keeps kFreshSpares spare work directories ready, making at most one new one a call
  // (its in/, out/ and empty logs): the loop calls it after a turn's work, so that a
  // job's start renames a directory into place rather than making its inodes on its way
  // to the process (docs/agent.md, "Jobs").
  void keep_spares();
  static constexpr std::size_t kFreshSpares = 2;
  // Jobs this executor was asked to spawn so far (the loop tells a turn that started one).
  std::uint64_t spawned() const { return spawned_; }

  // For the loop: the pidfds to poll, and the processes that have exited since.
  std::vector<int> pidfds() const;
  // FIRED: which of pidfds() fired since the last reap (nullptr: every one is looked at).
  // A job host's socket is read only when it fired.
  std::vector<std::pair<Digest, ProcessExit>> reap(const std::vector<int>* fired = nullptr);
  std::size_t processes() const { return procs_.size(); }
  // Starts the job hosts now rather than at the first job; says how jobs will start (a
  // line for the log), "" without a job host program.
  std::string start_job_hosts();

 private:
  std::string state_dir_;
  store::ArtifactStore* store_;
  std::string bwrap_;
  std::vector<int> cpus_;  // the CPUs jobs may be kept to (a stage's `cpus`)
  std::map<Digest, JobProcess> procs_;
  JobCgroups cgroups_;
  // The jobs with a cgroup: its name, and the stage (its limits) for what it counted.
  struct InCgroup {
    std::string name;
    promises::Stage stage;
  };
  std::map<Digest, InCgroup> in_cgroup_;
  // Cgroups of ended jobs that were still busy when they were to be removed.
  std::set<std::string> to_remove_;
  bool swept_ = false;  // this agent's empty leftover cgroups removed (at the first spawn)
  // Work directories of ended runs, emptied, kept for the next runs (docs/agent.md,
  // "Jobs"): renamed into place, they spare a job the inodes of its directories and logs.
  std::vector<std::string> spare_dirs_;
  std::uint64_t spares_made_ = 0;
  const std::string pid_text_ = std::to_string(::getpid());  // in spares' names, read once
  std::uint64_t spawned_ = 0;  // jobs spawned (spawned())
  bool spares_swept_ = false;  // an earlier incarnation's spares removed (at the first run)
  bool recycle_work_dir(const JobLayout& l, bool alone);
  // Jobs whose host saw them end alone (JobProcess::ended_alone), until their directory
  // goes; at most kMaxEndedAlone (a failed run's stays, its directory kept).
  std::set<Digest> ended_alone_;
  static constexpr std::size_t kMaxEndedAlone = 4096;
  void sweep_spares();  // an earlier incarnation's spares go, once
  bool jobs_dir_made_ = false;  // a work directory was made: jobs/ is there for spares
  // What the job's cgroup counted; removes it (or queues it in to_remove_).
  LimitCounts end_cgroup(const std::string& name, const promises::Stage& stage);
  // The job host (the one in the sandbox if `sandboxed`), started if none runs;
  // kUnavailable when there is none to be had.
  Result<JobHost*> job_host(bool sandboxed);
  // Starts the job through that host (BY: which); kUnavailable when there is none (the
  // caller gives the job a bwrap or a supervisor shell of its own instead).
  Result<JobProcess> spawn_hosted(const SpawnSpec& spec, bool sandboxed, const JobHost** by);
  std::string job_host_exe_;
  std::unique_ptr<JobHost> host_;
  std::unique_ptr<JobHost> sandbox_host_;
  std::string sandbox_host_problem_;  // why there can be none here, once known
  std::map<Digest, const JobHost*> host_of_;  // the jobs a host runs, watched through it
};

// Fetched bytes arrive in memory (RECEIVED, up to kInMemoryFetchBytes) or in
// STATE/incoming/<digest>.part (the daemon's network puts them there,
// agent/fetch_sink.h) and go into the store, which hashes them again: nothing enters it
// that does not match its name.
class StoreSink final : public ArtifactSink {
 public:
  StoreSink(std::string state_dir, store::ArtifactStore* worker_store,
            ReceivedInMemory* received = nullptr)
      : state_dir_(std::move(state_dir)), store_(worker_store), received_(received) {}
  ~StoreSink() override;
  StoreSink(const StoreSink&) = delete;
  StoreSink& operator=(const StoreSink&) = delete;
  Result<Received> store_received(const Digest& digest, std::optional<bool> is_tree) override;
  std::vector<Result<Received>> store_received_together(
      const std::vector<std::pair<Digest, std::optional<bool>>>& items,
      std::vector<store::ArtifactRecord>* rows) override;
  Status store_tree(const Digest& digest, const std::vector<TreeEntry>& entries) override;
  bool bytes_match(const Digest& digest, std::string_view bytes) override;
  void hold(const Digest& digest, std::string bytes) override;
  Status place(const Digest& digest, std::string_view bytes) override;
  PlacedFile placed_source(const Digest& digest) override;
  void name_placed() override;
  std::size_t unnamed() const { return unnamed_.size(); }  // placed, not named yet (tests)
  std::optional<std::string> held_bytes(const Digest& digest, std::size_t max_bytes) override;
  // Makes unnamed files in the store's tmp/ for place() to take, up to kSpareFiles: a
  // placement on the way to a job's start then allocates no inode. On the loop, as
  // place() is; the daemon calls it in a turn that started no job (not alongside a
  // start, which the allocation would slow). How many are ready (tests).
  void make_spares();
  std::size_t spares_ready() const { return spares_.size(); }
  static constexpr std::size_t kSpareFiles = 2;

 private:
  Status place_renamed(const Digest& digest, std::string_view bytes, const std::string& path);
  int take_spare();  // -1: none ready
  std::string state_dir_;
  store::ArtifactStore* store_;
  ReceivedInMemory* received_;
  std::uint64_t placed_ = 0;  // temporaries named apart
  std::vector<int> spares_;  // open, unnamed, empty, in tmp/
  std::map<Digest, int> unnamed_;  // placed, whole, not named in the store yet
  bool no_spares_ = false;   // the file system has no unnamed files (O_TMPFILE)
};

// Whether link_open_file (effects.h) tries AT_EMPTY_PATH before /proc/self/fd; it stops
// trying on its first refusal. Tests turn it off to take the way of an older kernel.
void link_open_file_by_descriptor(bool on);

// Where the bytes of a fetch in flight arrive.
std::string incoming_path(const std::string& state_dir, const Digest& digest);

}  // namespace vow::agent
