// Planner: from the pipelines an agent knows and the ledger's source versions and
// canonical results, the jobs that exist right now (docs/coordination.md).
//
// A stage's jobs exist once every input has a canonical artifact: a source's latest
// version, or an upstream stage's output. A plain stage has one job; a stage with
// `foreach` has one job per entry of that directory input (shard key = entry name,
// input = the entry). The output of a fanned-out stage, for its consumers, is the
// directory of its shard outputs (entry name = shard key, digest = the shard's output,
// tree_digest over them): the fan-in. Planning is a pure function of its inputs, so
// every agent with the same ledger plans the same jobs with the same ids.
//
// Pipelines known only from the ledger (PipelineDef statements) are decoded with
// parse_canonical_pipeline (pipeline.h), so agents that did not load a pipeline can still
// plan and show it. Timeout and retries are not in the encoding: they come back as 0.
//
// Current definitions (docs/coordination.md section 4): of all the definitions known, a
// stage definition (by stage digest) is planned only while some agent's current advert
// (its latest) promises it. Per pipeline name the planner plans one pipeline made of the
// current definition of each stage; a stage nobody promises is pending ("no agent
// promises it") and plans no job. Two current definitions of one stage (two agents
// promise different digests for one pipeline/stage name) are a conflict: it is reported
// in Plan::conflicts and the definition promised by the most agents (then the least
// digest) is planned, the same choice on every agent.
//
// Value types; a Plan shares (immutable) the pipelines it planned. Not thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "promises/ledger.h"
#include "promises/pipeline.h"
#include "promises/statement.h"

namespace vow::promises {

// Limit on jobs one stage may fan out to in a plan (a directory with more entries is
// planned up to the limit and the stage is reported blocked).
inline constexpr std::size_t kMaxShardsPerStage = 100'000;

struct PlannedJob {
  JobRef ref;
  std::vector<NamedArtifact> inputs;      // by local input name
  std::vector<Accept::Binding> bindings;  // one per input (per entry for a fan-in)
  const Stage* stage = nullptr;           // owned by the Plan
  int retries = 0;
  std::int64_t timeout_ms = 0;
};

enum class StageState : std::uint8_t {
  kPending,  // an input has no canonical artifact yet
  kPlanned,  // jobs exist; not all done
  kDone,     // every job has a canonical result
  kBlocked,  // an upstream job failed past its retries (or the input cannot be fanned out)
};
const char* stage_state_name(StageState state);

struct StagePlan {
  std::string pipeline;
  Digest pipeline_digest;
  std::string stage;
  Digest stage_digest;
  StageState state = StageState::kPending;
  std::string reason;                          // why pending or blocked
  std::vector<Digest> jobs;                    // planned jobs of this stage
  std::map<std::string, ArtifactRef> outputs;  // when done: output name -> artifact
};

// What the planner needs to know about jobs: their canonical result, and whether they
// failed for good.
struct JobOutcomes {
  std::function<const JobResult*(const Digest& job)> canonical;
  std::function<const Statement*(const Digest& job)> canonical_statement;
  std::function<bool(const Digest& job, int retries)> failed;
};

// Two or more definitions of one stage promised by current adverts.
struct StageConflict {
  std::string pipeline;
  std::string stage;
  Digest planned;  // the one planned (most promisers, then the least digest)
  std::map<Digest, std::vector<AgentKey>> promised_by;  // stage digest -> agents
};

struct Plan {
  // The current definition of each pipeline (one per name): what was planned.
  std::vector<std::shared_ptr<const Pipeline>> pipelines;
  // Every definition known (files and ledger), current or not: for explaining old jobs.
  std::vector<std::shared_ptr<const Pipeline>> known;
  std::map<Digest, PlannedJob> jobs;
  std::vector<StagePlan> stages;
  std::vector<StageConflict> conflicts;
  // Names this plan among all plans made (a new one per make_plan): the job index
  // (core_internal.h) holds a weak reference to know when the plan it read was replaced.
  std::shared_ptr<const int> identity = std::make_shared<const int>(0);

  const PlannedJob* find(const Digest& job) const {
    auto it = jobs.find(job);
    return it == jobs.end() ? nullptr : &it->second;
  }
};

// Pipelines to plan: `own` (loaded from files, with timeout/retries) first, then every
// PipelineDef in the ledger with a digest not already there, decoded once and kept in
// `decoded` between calls.
std::vector<std::shared_ptr<const Pipeline>> known_pipelines(
    const std::vector<std::shared_ptr<const Pipeline>>& own, const Ledger& ledger,
    std::map<Digest, std::shared_ptr<const Pipeline>>& decoded);

// What the planner reads of the ledger: the adverts in force (one per author) and the
// current version of a dataset. A horizon plans from those at its cut (horizon.h).
struct PlanInputs {
  const std::map<AgentKey, const Statement*>* adverts = nullptr;
  std::function<const Statement*(const std::string& pipeline, const std::string& source)>
      source_version;
};

// What of the adverts and source versions a plan of PIPELINES read: the stage digests
// current adverts promise (with who promises each only where a stage has two or more:
// a conflict, where the count decides), and the statement (author, seq) that is each
// source's current version, and the pipeline definitions the ledger holds. A new advert,
// definition or source version that leaves it equal (a joining agent promising and
// defining what others do, a restart) changes no job of the plan.
struct PlanBasis {
  std::map<std::pair<std::string, std::string>, std::map<Digest, std::vector<AgentKey>>> promised;
  std::vector<std::pair<AgentKey, std::uint64_t>> sources;
  std::vector<Digest> defined;  // the pipeline definitions (PipelineDef) in the ledger
  bool operator==(const PlanBasis&) const = default;
};
PlanBasis plan_basis(const std::vector<std::shared_ptr<const Pipeline>>& pipelines,
                     const Ledger& ledger);

// (pipeline, stage) -> stage digest -> the agents whose current advert promises it.
using StageName = std::pair<std::string, std::string>;
using Promised = std::map<StageName, std::map<Digest, std::vector<AgentKey>>>;

// The current definitions (above) of the pipelines a plan reads: one pipeline per name
// made of the chosen stage definitions, the stages no advert promises, the conflicts.
// A function of the known pipelines and the current adverts' promises alone.
struct CurrentDefinitions {
  std::vector<std::shared_ptr<const Pipeline>> pipelines;  // one per name
  std::set<StageName> unpromised;                          // stages no advert promises
  std::vector<StageConflict> conflicts;
};

// The current definitions of the last plan and what they were made from: the next plan
// of the same pipelines (the same objects) under the same promises takes them as they
// are, rather than copying every stage and hashing each pipeline again. Only a caller
// that plans again and again keeps one (the core); the plan is the same with or without.
struct DefinitionsCache {
  std::vector<std::shared_ptr<const Pipeline>> known;
  Promised promised;
  std::optional<CurrentDefinitions> current;
  std::uint64_t made = 0;    // plans that made their definitions
  std::uint64_t reused = 0;  // plans that took them from here
};

// Plans the current definitions (above) among the pipelines given, from the ledger's
// current adverts and source versions; with CACHE, its definitions where they still hold.
Plan make_plan(const std::vector<std::shared_ptr<const Pipeline>>& pipelines, const Ledger& ledger,
               const JobOutcomes& outcomes, DefinitionsCache* cache = nullptr);
Plan make_plan(const std::vector<std::shared_ptr<const Pipeline>>& pipelines, const PlanInputs& in,
               const JobOutcomes& outcomes, DefinitionsCache* cache = nullptr);

}  // namespace vow::promises
