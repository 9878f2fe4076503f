// The promise language as plain values: pipelines (sources and stages) and agent files
// (identity, peers, trust, promises, sources, timing), plus the identity of work:
// canonical stage encodings, stage and pipeline digests, and job ids.
//
// Parsing from TOML text lives in config.h; these types carry no I/O. See
// docs/config.md for the file formats and docs/identity.md for the encodings.
//
// Value types; thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "promises/digest.h"
#include "promises/status.h"

namespace vow::promises {

// Where something was written: for FILE:LINE:COLUMN errors. line/column are 1-based;
// 0 means unknown (e.g. a whole-file problem).
struct Location {
  std::string file;
  int line = 0;
  int column = 0;
  std::string to_string() const;  // "file:line:column"
};

// One validation error: "FILE:LINE:COLUMN: message".
struct Diagnostic {
  Location where;
  std::string message;
  std::string to_string() const;
};

// One entry of a stage's `inputs`: a pipeline source ("corpus") or another stage's
// output ("split.shards"). The input's local name (VOW_IN_<name>) is the source
// name or the output name.
struct InputRef {
  std::string stage;   // empty for a source
  std::string name;    // source name, or output name of `stage`
  bool is_source() const { return stage.empty(); }
  std::string local_name() const { return name; }
  std::string to_string() const { return is_source() ? name : stage + "." + name; }
  auto operator<=>(const InputRef&) const = default;
};

struct Source {
  std::string name;
  Location where;
};

// The largest `pids` and `cpus` a stage may ask for.
inline constexpr int kMaxStagePids = 1'000'000;
inline constexpr int kMaxStageCpus = 1024;

struct Stage {
  std::string name;
  std::vector<InputRef> inputs;
  std::vector<std::string> outputs;
  // The command: argv, run directly. A `run` string s becomes {"/bin/sh", "-c", s};
  // run_is_shell records which form was written (it is part of the definition).
  std::vector<std::string> argv;
  bool run_is_shell = false;
  std::optional<InputRef> foreach;  // one of `inputs`, fanned out per directory entry
  std::int64_t timeout_ms = 0;      // 0: no timeout
  int retries = 0;                  // extra attempts after a failure
  std::map<std::string, std::string> env;
  // What the job may do beyond its directories (docs/sandbox.md): reach the network,
  // and the address space it may use (0: no limit). Both are part of the definition.
  bool network = false;
  std::int64_t memory_bytes = 0;
  // Processes the job may have at once, and the CPUs it may use (docs/sandbox.md,
  // "Limits"); 0: no limit. Part of the definition, as `memory` is.
  int pids = 0;
  int cpus = 0;
  // The environment the command runs in (docs/sandbox.md, "Environments"): a container
  // image named by its digest, "sha256:<64 hex>" or "NAME@sha256:<64 hex>"; empty: the
  // host's own file system. Part of the definition.
  std::string image;
  // Or a root file system given as an artifact: one of `inputs` (not the foreach one),
  // a directory that becomes `/` of the job (docs/sandbox.md, "Environments"). Its
  // digest is part of the job id as every input's is; which input it is, is part of
  // the definition.
  std::optional<InputRef> root;
  Location where;                   // the [[stage]] header
  Digest digest;                    // stage_digest(*this), filled by the parser
};

struct Pipeline {
  std::string name;
  std::vector<Source> sources;
  std::vector<Stage> stages;  // in topological order after parsing
  std::string file;
  Digest digest;              // pipeline_digest(*this), filled by the parser

  const Stage* find_stage(std::string_view name) const;
  const Source* find_source(std::string_view name) const;
};

// Failure-detection and gossip timing (docs/coordination.md). Defaults give sub-second
// failover on a LAN.
// Failure detection (docs/coordination.md, "Membership"): SWIM with Lifeguard in a LAN
// or a WAN profile, or the all-to-all heartbeats of heartbeat_ms / suspect_after_ms /
// dead_after_ms (good to about a hundred agents).
enum class MembershipProfile : std::uint8_t { kLan, kWan, kAllToAll };
const char* membership_profile_name(MembershipProfile profile);

// SWIM parameters. Defaults: the LAN profile (swim_profile()).
struct SwimTiming {
  std::int64_t probe_interval_ms = 100;  // one probe per interval (times the local health)
  std::int64_t probe_timeout_ms = 40;    // direct ack wait before the indirect probes
  int indirect_probes = 3;               // k: agents asked to ping-req a silent target
  // Suspicion lasts from max_mult * min down to min as independent confirmations (up to
  // k) arrive, min = suspicion_mult * max(1, log10(N)) * probe_interval (Lifeguard).
  int suspicion_mult = 2;
  int suspicion_max_mult = 3;
  // An update is piggybacked retransmit_mult * ceil(log10(N + 1)) times.
  int retransmit_mult = 4;
  int max_local_health = 8;  // Lifeguard's S: probe interval and timeout scale up to (S+1)x
  bool operator==(const SwimTiming&) const = default;
};
SwimTiming swim_profile(MembershipProfile profile);

struct Timing {
  MembershipProfile membership = MembershipProfile::kLan;
  SwimTiming swim;
  std::int64_t heartbeat_ms = 100;
  std::int64_t suspect_after_ms = 300;
  std::int64_t dead_after_ms = 600;
  std::int64_t sync_interval_ms = 1000;  // periodic anti-entropy
  std::int64_t claim_step_ms = 50;       // rank r waits r claim steps before claiming
  bool operator==(const Timing&) const = default;
};

struct PromiseDecl {
  std::string pipeline;
  std::string stage;
  int capacity = 1;
  // Where the jobs run (docs/executors.md): "local" (this host, in the sandbox) or
  // "slurm" (submitted to the cluster of the agent's [slurm] table).
  std::string executor = "local";
  Location where;
};

// [slurm] in an agent file (docs/executors.md): how the Slurm executor submits jobs.
struct SlurmConfig {
  // A directory the agent and every compute node see at this path: jobs' work
  // directories (inputs, outputs, logs) live under it. Empty: no [slurm] table.
  std::string shared_dir;
  std::string partition;            // sbatch --partition; empty: the cluster's default
  std::int64_t poll_ms = 1000;      // how often squeue is asked about submitted jobs
  Location where;                   // the [slurm] table
};

struct SourceDecl {
  std::string pipeline;
  std::string source;
  std::string path;
  bool watch = false;
  Location where;
};

struct AgentConfig {
  std::string name;
  std::string listen;                  // "tcp://HOST:PORT"
  std::string advertise;               // what peers are told to dial; empty: from listen
  std::vector<std::string> peers;      // seed endpoints
  std::string state_dir;
  std::vector<std::string> pipelines;  // paths or globs of pipeline files
  std::string control;                 // control endpoint; empty: ipc in state_dir
  std::string control_group;           // non-empty: control socket 0660, owned by this group
  std::string http;                    // "HOST:PORT"; empty: no HTTP listener
  // A file holding the token the web view asks for (agent/web.h); the agent reads it.
  std::string http_token_file;
  Location http_token_file_where;
  std::vector<std::string> trust_keys;     // agent ids or hex public keys
  std::vector<std::string> trust_clients;  // read-only query clients
  std::vector<PromiseDecl> promises;
  std::vector<SourceDecl> sources;
  Timing timing;
  int replicas = 2;
  // Statements held beyond the last ledger horizon before this agent proposes one
  // (docs/storage.md); 0: it proposes none.
  std::uint64_t horizon_every = 5'000;
  // Horizons also retire superseded jobs (docs/storage.md, "Superseded jobs"): this
  // agent proposes such horizons and endorses them; false: it does neither.
  bool retire_superseded = true;
  // This agent's proposal is a checkpoint once the horizons since the last one listed
  // this percentage of the entries one would (docs/storage.md, "Checkpoints"); 0: none.
  std::uint32_t checkpoint_percent = 100;
  // How often a periodic garbage collection pass runs (docs/storage.md, "Retention").
  std::int64_t gc_interval_ms = 300'000;
  // How jobs run (docs/sandbox.md): "auto" (bubblewrap when it works, else unsandboxed
  // with a warning), "bwrap" (bubblewrap or refuse to start), "none".
  std::string sandbox = "auto";
  // How a stage's memory, pids and cpus limits are applied (docs/sandbox.md, "Limits"):
  // "auto" (a cgroup per job where the host lets the agent make them, else rlimits),
  // "cgroups" (or refuse to start), "rlimits" (never cgroups).
  std::string job_limits = "auto";
  // How artifacts travel between agents (docs/protocol.md, "Bulk without encryption"):
  // "encrypted" (on the CurveZMQ links) or "integrity" (chunks on a plain link, checked
  // against the signed digest as always; only between two agents that both say so).
  std::string bulk_transfer = "encrypted";
  // With "integrity": the TCP port of the plain listener (0: one the system picks).
  int bulk_port = 0;
  SlurmConfig slurm;
  std::string file;
  Location where;  // the [agent] table
  // Globs, relative to the agent file's directory, of files holding trusted agent ids,
  // one per line; the agent reads them (the parser only checks they are strings).
  std::vector<std::string> trust_key_files;
  std::vector<Location> pipelines_where;  // where each `pipelines` entry was written
  // Where each entry of trust_keys, trust_clients and trust_key_files was written (for
  // the checks of agent/config_files.h, which read the key files).
  std::vector<Location> trust_keys_where;
  std::vector<Location> trust_clients_where;
  std::vector<Location> trust_key_files_where;
};

// Why `image` does not name a container image by its digest ("sha256:<64 lowercase hex>",
// after an optional "NAME@", NAME printable ASCII without spaces, at most 256 bytes);
// empty when it does. A tag ("python:3.12") is refused: it can name other bytes tomorrow.
std::string image_problem(std::string_view image);

// ---- Identity of work (docs/identity.md) ----

// The canonical encoding of a stage definition: everything that changes what the stage
// computes (name, command and its form, inputs, outputs, env, foreach, network, memory,
// image, pids, cpus, root), nothing that does not (comments, key order, whitespace, timeout,
// retries). Starts with a version tag. `network` and `memory` are encoded only when one of
// them or a later field is set, and each later field (`image`, `pids`, `cpus`, `root`) only
// when set, as a tag and a
// value: the stages that set none of them keep the digests they had before these fields
// existed.
std::string canonical_stage(const Stage& stage);
Digest stage_digest(const Stage& stage);
// Digest over the pipeline name, its sources and its stages' digests.
std::string canonical_pipeline(const Pipeline& pipeline);
Digest pipeline_digest(const Pipeline& pipeline);
// Rebuilds a pipeline from canonical_pipeline() bytes (as carried by a PipelineDef
// statement). Timeout and retries are not part of the encoding and come back as 0.
Result<Pipeline> parse_canonical_pipeline(std::string_view canonical);

// One named input of a job and the artifact bound to it.
struct JobInput {
  std::string name;  // local input name
  Digest digest;
  auto operator<=>(const JobInput&) const = default;
};

// job id = digest of (stage digest, input digests by name, shard key); shard key is
// empty for a job that is not a fan-out shard. Inputs are sorted by name here.
Digest job_id(const Digest& stage_digest, std::vector<JobInput> inputs, std::string_view shard);

}  // namespace vow::promises
