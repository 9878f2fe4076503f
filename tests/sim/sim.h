// The deterministic simulator (docs/coordination.md, "Simulator"): N real agents
// (agent/agent.h, the object vowd runs) over simulated effects (world.h): a seeded
// network that drops, duplicates, delays, reorders and partitions; agents that crash
// and restart keeping only what they persisted, whose processes may outlive them; a
// disk that fills up; a worker whose queue fills and whose work is slow; spawns that
// fail and processes that take their time to die; jobs with seeded durations,
// deterministic or not, that may fail; pipelines generated from the seed; forged
// statements that must be dropped. Invariants are checked during the run and at the
// end of each seed.
//
// Single-threaded; all randomness comes from one std::mt19937_64 seeded per run, so a
// seed replays byte for byte.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "promises/digest.h"
#include "promises/pipeline.h"

namespace vow::sim {

enum class Faults { kNone, kNet, kCrash, kAll };

struct SimOptions {
  std::uint64_t seed = 1;
  int agents = 5;
  int stages = 5;  // stages in the generated pipeline (--jobs)
  Faults faults = Faults::kAll;
  bool verbose = false;  // print the event trace
  int shards = 0;        // > 0: the source has this many entries (a fan-out that wide)
  // Faults forced on for the whole run (else drawn from the seed with faults = all).
  bool squeeze_worker = false;  // the worker's queue holds one task
  bool slow_kills = false;      // every killed process takes 0.2-1.5 s to die
  // An agent crashes as soon as it runs a process whose claim is not durable yet (the
  // claim's sync still under way: the start did not wait for it), up to twice a seed,
  // in the fault window. Needs deferred_sync's seeds to happen at all.
  bool crash_unsynced_runs = false;
  // A quarter of the objects placed for a job (small outputs that came with their
  // result) are lost from the store a moment later, while the store of their bytes may
  // still be under way.
  bool lose_placed = false;
  // Disk commits durable only once a later sync completes (StateStore::defers_sync), in
  // half the seeds. vow-sim sets it unless --sync-on-loop (vowd defers its syncs).
  bool deferred_sync = false;
  // A hostile host with a trusted key sends arbitrary, validly signed statements during
  // the fault window (else drawn from the seed with faults = all).
  bool hostile = false;
  // Measure membership (--membership): no faults but one (and a lossy network with
  // faults = net); agent (seed % agents) is killed at kMeasureKillMs and restarted when
  // the watch ends (kMeasureWatchMs later).
  bool membership = false;
  promises::MembershipProfile profile = promises::MembershipProfile::kLan;  // --profile
  // Statements beyond the last ledger horizon before one is proposed (--horizon-every;
  // small, so that runs see several; 0: none).
  std::uint64_t horizon_every = 30;
  // A proposal is a checkpoint once the horizons since the last listed this percentage of
  // what it would (--checkpoint-percent; CoreConfig::checkpoint_percent). -1: by seed,
  // 10, 30 or 100, so that runs see several.
  int checkpoint_percent = -1;
  // Horizons also retire superseded jobs (--keep-superseded: they do not).
  bool retire_superseded = true;
  // Source updates beyond the one a third of the seeds get (--source-updates), at random
  // times in the fault window: each makes the first stage's jobs superseded, and old
  // source versions for horizons to retire.
  int source_updates = 0;
};

inline constexpr std::int64_t kMeasureKillMs = 3'000;
inline constexpr std::int64_t kMeasureWatchMs = 10'000;

struct SimResult {
  std::vector<std::string> failures;            // empty: every invariant held
  Digest trace_hash;                            // over every step of the run
  std::vector<std::int64_t> failover_ms;        // claimant crash -> job started elsewhere
  std::vector<std::int64_t> failover_claim_ms;  // claimant crash -> claimed elsewhere
  std::int64_t sim_end_ms = 0;
  std::uint64_t deliveries = 0;
  std::uint64_t jobs_done = 0;
  std::uint64_t worker_refusals = 0;    // submits the worker refused (queue full)
  std::uint64_t worker_backlogged = 0;  // tasks agents kept until the worker had room
  // Passes of only fetched objects' index rows carried out before their sync completed.
  std::uint64_t carried_before_sync = 0;
  std::uint64_t synced_in_pass = 0;  // passes whose sync was made at once (sync_if_cheap)
  // Jobs started before the sync of the pass that decided their start completed.
  std::uint64_t started_before_sync = 0;
  // Jobs started before the pass that claimed them committed the claim (with deferred
  // sync: docs/agent.md, "Starts before the sync").
  std::uint64_t started_before_commit = 0;
  // Of the starts from placed inputs, those before their claim's commit (the fetch of
  // bytes that came with their result acted as the core asked: Agent::fetch_attached_now).
  std::uint64_t linked_before_commit = 0;
  std::uint64_t placed_lost = 0;  // SimOptions::lose_placed
  // Jobs started with inputs placed moments ago, linked on the loop (no worker trip).
  std::uint64_t started_from_placed = 0;
  // Running-job rows a restart found without the claim they ran under (lost by a crash
  // before its sync): the core stops such runs.
  std::uint64_t runs_without_claim = 0;
  // Passes whose peers' statements an agent held for a later commit, and statements so
  // held that a crash lost (docs/agent.md, "Peers' statements, committed in batches").
  std::uint64_t held_passes = 0;
  std::uint64_t held_lost = 0;
  // Small outputs that came with their result and were stored without a transfer; bytes
  // that came attached but were not their digest's (the hostile host's), dropped.
  std::uint64_t attached_used = 0;
  std::uint64_t attached_refused = 0;
  std::uint64_t hostile_attachments = 0;  // forged bytes the hostile host attached
  std::uint64_t transfers = 0;            // artifact transfers started between agents
  // Broadcasts of statements (not answers to sync requests), and the statements in them.
  std::uint64_t statement_broadcasts = 0;
  std::uint64_t statements_broadcast = 0;
  // The signatures those statements took: one for each signed alone, one for each
  // batch signed together (docs/protocol.md, "Statements signed together").
  std::uint64_t broadcast_signatures = 0;
  std::uint64_t slow_kills = 0;         // kills that took 0.2 s or more
  std::uint64_t adoptions = 0;          // processes taken over after a restart
  std::uint64_t agent_failures = 0;     // agents that stopped (disk full) and were restarted
  bool hostile = false;                 // a hostile host took part
  std::uint64_t hostile_statements = 0;  // statements it sent (each variant once)
  std::uint64_t trees_refused = 0;       // fetched trees refused past the expansion limits
  std::size_t ledger_size = 0;           // statements in a0's ledger at the end
  std::uint64_t horizons = 0;            // the highest horizon applied by an agent
  std::uint64_t retired = 0;             // the most statements retired by an agent
  std::uint64_t checkpoints = 0;         // the most checkpoints applied by an agent
  std::uint64_t checkpoints_alone = 0;   // agents that applied one without the one before
  std::uint64_t jobs_emptied = 0;        // the most superseded jobs retired whole by one
  std::uint64_t line_base = 1;           // the highest version a source line starts at
  // Membership measures (every run counts messages; the rest with options.membership):
  std::uint64_t messages = 0;             // messages sent, every kind
  std::uint64_t membership_messages = 0;  // heartbeats and probes
  std::int64_t detect_first_ms = -1;  // kill -> the first live agent marks the victim dead
  std::int64_t detect_all_ms = -1;    // kill -> every live agent did (-1: not all did)
  std::uint64_t false_suspicions = 0;  // an agent that was up marked suspect by a peer
  std::uint64_t false_deaths = 0;      // ... marked dead
};

SimResult run_seed(const SimOptions& options);

}  // namespace vow::sim
