// Effects: every side effect of an agent goes through these interfaces, so that one
// Agent (agent/agent.h) runs unchanged in two worlds: in vowd over the system clock,
// ZeroMQ links, SQLite, the artifact store and real processes (agent/local_effects.h,
// agent/daemon_net.cc), and in the seeded simulator (tests/sim) over a simulated clock,
// network, disk and process table that inject faults.
//
// The rules every implementation keeps:
//   - Calls come from the agent's one thread (the event loop), except those marked
//     "worker": those run inside a Worker task.
//   - Nothing here calls the Agent back synchronously. What happens later (a message
//     arrives, a transfer ends, a process exits, a task completes) is fed to the Agent
//     by its owner as an input.
//   - An expected failure is a Status; the Agent handles every one.
//
// Interfaces only; the implementations say who owns what.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agent/job_cgroup.h"
#include "promises/core.h"
#include "promises/statement.h"
#include "promises/status.h"
#include "store/ledger.h"

namespace vow::agent {

// Monotonic time for every decision; wall time only to stamp what humans read.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::int64_t now_ms() const = 0;
  virtual std::int64_t wall_ms() const = 0;
};

// Links to peers. Statements in messages carry their signed forms, which is what
// travels; the receiving side verifies them before the Agent sees them.
class Network {
 public:
  virtual ~Network() = default;
  // Best effort: a message to a peer that is not linked is dropped.
  virtual void send(const AgentKey& to, const promises::Message& message) = 0;
  virtual void broadcast(const promises::Message& message) = 0;
  // Links to a peer at its advertised endpoints (kept and re-dialled by the network).
  // The owner tells the Agent when the peer is reachable (Agent::peer_connected).
  virtual void connect(const AgentKey& peer, const std::vector<std::string>& endpoints) = 0;
  // The failure detector declared the peer dead: the network may dial it less often until
  // it is heard from again (a peer that left for good costs little).
  virtual void peer_dead(const AgentKey& peer) = 0;
  // Starts a transfer of an artifact's bytes from a peer; returns its id. kOverloaded:
  // no place for another transfer now (the Agent queues it until one ends). The bytes
  // arrive where ArtifactSink::store_received finds them; the outcome is fed with
  // Agent::fetch_outcome(id, status).
  virtual Result<std::uint64_t> fetch(const AgentKey& from, const Digest& digest) = 0;
  // Ends a transfer early; its outcome (an error) is still fed.
  virtual void cancel_fetch(std::uint64_t id) = 0;
};

// The agent's durable state. What a call returns ok for survives a crash.
class StateStore {
 public:
  virtual ~StateStore() = default;
  // Own statements (in order, first) and peers' statements, each with its signed form.
  virtual Status persist(const std::vector<Statement>& statements) = 0;
  // Equivocation proofs (promises::Output::proofs): the second statement of an (author,
  // seq) whose first is persisted, each with its signed form.
  virtual Status persist_proofs(const std::vector<Statement>& proofs) = 0;
  // Slots that became void (promises::Output::voided): the advert persisted there, if
  // any, is forgotten and the slot recorded as void.
  virtual Status persist_voids(const std::vector<StatementRef>& slots) = 0;
  // Statements a horizon retired (promises::Output::retired): dropped from disk.
  virtual Status persist_retired(const std::vector<StatementRef>& retired) = 0;
  // Runs FN, whose persist calls above then become durable together: one commit and one
  // sync for all of them (group commit). None of them is durable before this returns ok;
  // after an error, which were kept is unspecified. The default runs FN as it is (each
  // call durable on its own).
  virtual Status persist_together(const std::function<Status()>& fn) { return fn(); }
  // Durability off the caller's thread. When true, persist_together returns once its
  // writes are committed (they survive a crash of the process) but before they are
  // durable (they may not survive a power loss); the agent then calls request_sync with
  // a ticket, and the owner makes every commit so far durable elsewhere and feeds
  // Agent::synced(ticket) (or Agent::sync_failed). Tickets are durable in order. The
  // agent holds back whatever depends on those writes until then (docs/agent.md).
  virtual bool defers_sync() const { return false; }
  virtual void request_sync(std::uint64_t ticket) { (void)ticket; }
  // Instead of request_sync, where a sync costs less than handing it off: makes every
  // commit so far durable before it returns, and says so (true: the agent carries out
  // what waited for `ticket` at once). False: nothing was done; request_sync follows.
  virtual bool sync_if_cheap(std::uint64_t ticket) {
    (void)ticket;
    return false;
  }
  // Index rows of objects a worker stored and synced (Executor::collect), committed with
  // the statements persisted in the same group: the rows and the result naming their
  // objects share one sync. The default keeps none (an executor that hands back no
  // rows: the simulator's).
  virtual Status persist_index(const std::vector<store::ArtifactRecord>& rows) {
    (void)rows;
    return Status::ok();
  }
  // The running-job table: rows for the processes this agent started, so that after a
  // restart it can take them over (or stop them) as the core decides.
  virtual Status put_running_job(const store::RunningJob& row) = 0;
  virtual Status remove_running_job(const Digest& job) = 0;
  // At a run's start, where its row is then committed with the next group (put inside
  // persist_together): a note of it that survives a crash of the process until then, as
  // the row would (agent/running_journal.h). The default writes the row at once.
  virtual Status note_running_job(const store::RunningJob& row) { return put_running_job(row); }
  // A group committed the rows of every run noted so far (or their runs ended): the
  // notes may go.
  virtual void running_rows_settled() {}
};

// Runs the agent's background work off its loop: a task runs on a worker and returns
// a completion, which the owner runs on the loop later and then pumps the Agent.
class Worker {
 public:
  using Task = std::function<std::function<void()>()>;
  virtual ~Worker() = default;
  // kOverloaded when the queue is full: the task was NOT queued.
  virtual Status submit(Task task) = 0;
};

// What a process left behind after a restart turned out to be.
struct Adoption {
  enum class Kind : std::uint8_t {
    kFinished,  // it ended while the agent was down: collect its outputs
    kRunning,   // it still runs: watched again from now on
    kGone,      // nothing usable: start it afresh
  };
  Kind kind = Kind::kGone;
  int exit_status = 0;  // kFinished
  bool signaled = false;
  LimitCounts limits;  // kFinished: what its cgroup counted
  std::int64_t started_unix_ms = 0;
};

// The exit of a job's process.
struct ProcessExit {
  int exit_status = 0;  // 128+signal when killed by a signal
  bool signaled = false;
  // The limits the job's cgroup applied and what it counted (none without one): the
  // failure then says which limit was hit (limits_note, agent/sandbox.h).
  LimitCounts limits = {};
  bool ok() const { return !signaled && exit_status == 0; }
};

// Runs jobs: their files (work directory, inputs, outputs, logs) and their processes.
// A placed object as a job's input is linked from (ArtifactSink::placed_source): the
// descriptor of its unnamed file (fd >= 0), or a path.
struct PlacedFile {
  int fd = -1;
  std::string path;
};

// Links the open file FD (one this process made) at DEST: with AT_EMPTY_PATH where the
// kernel allows it (Linux 6.10 on, or CAP_DAC_READ_SEARCH), else through /proc/self/fd.
// 0, or -1 with errno set.
int link_open_file(int fd, const std::string& dest);

class Executor {
 public:
  virtual ~Executor() = default;
  // Loop: an empty work directory for the run (inputs and outputs come later).
  virtual Status create_work_dir(const promises::StartJob& start) = 0;
  // Worker: puts the run's inputs (all held in the store) in its work directory.
  virtual Status materialize_inputs(const promises::StartJob& start) = 0;
  // Loop: puts the run's inputs in its work directory when every one is a file the
  // agent placed moments ago (ArtifactSink::place) and has not stored since, without
  // the store's index (docs/storage.md, "Placed ahead of being stored"), each linked from
  // what SOURCE gives for it (ArtifactSink::placed_source). On failure it leaves no
  // input behind, and the worker's materialize_inputs is the way; kUnavailable where the
  // executor has no such shortcut.
  using PlacedSource = std::function<PlacedFile(const Digest&)>;
  virtual Status link_placed_inputs(const promises::StartJob& start, const PlacedSource& source) {
    (void)start;
    (void)source;
    return Status::unavailable("inputs are materialized by the worker");
  }
  // Loop: starts the run's process; returns its pid. Its exit is fed with
  // Agent::process_exited(job, exit).
  virtual Result<std::int64_t> spawn(const promises::StartJob& start) = 0;
  // Loop: stops the run's process (its exit is still fed). A no-op if none runs.
  virtual void kill(const Digest& job) = 0;
  // Loop: takes over a process a previous incarnation started (its running-job row),
  // for the run the core resumes.
  virtual Adoption adopt(const store::RunningJob& row, const promises::StartJob& start) = 0;
  // Loop: stops a process a previous incarnation started, which the core did not resume,
  // and removes its files.
  virtual void discard_leftover(const store::RunningJob& row) = 0;
  // Worker: why an exited run's outputs may not be imported (docs/sandbox.md), naming
  // the file; empty when they may. Called before collect, for a run that succeeded.
  virtual std::string refused_outputs(const promises::StartJob& start) {
    (void)start;
    return "";
  }
  // Worker: imports an exited run's logs and outputs into the store, synced, and adds
  // their index rows to INDEX_ROWS (not committed: StateStore::persist_index commits them
  // with the result).
  virtual promises::JobOutcome collect(const promises::StartJob& start, const ProcessExit& exit,
                                       const std::string& error,
                                       std::vector<store::ArtifactRecord>* index_rows) = 0;
  // Loop: removes a run's work directory (kept when it failed, for the operator).
  virtual void remove_work_dir(const promises::StartJob& start) = 0;
  // Where the run's files are, for log lines.
  virtual std::string work_dir(const promises::StartJob& start) const = 0;
};

// A fetched artifact as stored: a file is in the store; a tree's encoding was decoded
// and its children not held yet are listed (the tree is stored once they are).
struct Received {
  std::optional<std::vector<TreeEntry>> tree;
  std::vector<std::pair<Digest, bool>> missing;  // (child, is a tree)
};

// Where fetched bytes go. Worker calls.
class ArtifactSink {
 public:
  virtual ~ArtifactSink() = default;
  // The transfer of `digest` ended well (the stream checked its bytes against it): store
  // what arrived, verifying bytes held in memory (a file the stream wrote is trusted).
  // `is_tree` is what statements said it is, when they said.
  virtual Result<Received> store_received(const Digest& digest, std::optional<bool> is_tree) = 0;
  // Several transfers that ended: each stored as store_received does, one outcome each,
  // in order, written together where the sink can (one round of syncs); the index rows
  // of the new objects are handed back in ROWS for the agent's next commit
  // (StateStore::persist_index), or committed by the sink itself when ROWS is null.
  virtual std::vector<Result<Received>> store_received_together(
      const std::vector<std::pair<Digest, std::optional<bool>>>& items,
      std::vector<store::ArtifactRecord>* rows) = 0;
  // Every child of a fetched tree is held: store the tree.
  virtual Status store_tree(const Digest& digest, const std::vector<TreeEntry>& entries) = 0;
  // Loop: whether BYTES, which came with a result (promises::Attached), are DIGEST's.
  virtual bool bytes_match(const Digest& digest, std::string_view bytes) = 0;
  // Loop: bytes that came with a result, checked with bytes_match, to be taken by the
  // next store_received of DIGEST as a transfer's bytes in memory are.
  virtual void hold(const Digest& digest, std::string bytes) = 0;
  // Loop: puts bytes checked with bytes_match where a job's inputs are taken from, at
  // once: not synced and not indexed (the store_received of DIGEST that follows makes
  // them durable and hands back their row). kUnavailable where the sink cannot (the
  // caller then stores them first).
  virtual Status place(const Digest& digest, std::string_view bytes) {
    (void)digest;
    (void)bytes;
    return Status::unavailable("this sink places nothing ahead of storing it");
  }
  // Loop: what a placed object is linked from into a job's work directory: its unnamed
  // file where place() has not named it yet, else its name in the store; neither where
  // the sink places nothing.
  virtual PlacedFile placed_source(const Digest& digest) {
    (void)digest;
    return {};
  }
  // Loop: names every object placed and not named yet in the store (a placement leaves
  // that for after the start it lets go, so that the start waits for no link into a
  // fan-out directory). Called before the worker may look for one there; an object that
  // cannot be named there is stored by the worker from the bytes held.
  virtual void name_placed() {}
  // Worker: the bytes of a held file of at most MAX_BYTES, for its result to carry;
  // nullopt for a tree, a larger file, or one not held.
  virtual std::optional<std::string> held_bytes(const Digest& digest, std::size_t max_bytes) = 0;
};

// All of an agent's effects. The owner keeps each alive as long as the Agent.
struct Effects {
  Clock* clock = nullptr;
  Network* network = nullptr;
  StateStore* state = nullptr;
  Worker* worker = nullptr;
  Executor* executor = nullptr;
  ArtifactSink* sink = nullptr;
};

}  // namespace vow::agent
