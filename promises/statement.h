// Statements: the signed, immutable records agents publish and replicate (docs/protocol.md,
// docs/coordination.md), as plain values. The wire encoding, signing and verification
// live in transport/ (codec); the core consumes and produces these values only.
//
// Every statement has an author (an Ed25519 public key) and a per-author sequence
// number, strictly increasing from 1, so (author, seq) names it for ever and a
// version vector (author -> highest contiguous seq) summarizes a ledger.
//
// Value types; thread-compatible.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "promises/digest.h"
#include "promises/tree.h"

namespace vow {

// An agent's Ed25519 public key: its identity.
struct AgentKey {
  static constexpr std::size_t kSize = 32;
  std::array<std::uint8_t, kSize> bytes{};
  std::string hex() const { return to_hex(bytes); }
  std::strong_ordering operator<=>(const AgentKey& o) const {
    return compare_32_bytes(bytes.data(), o.bytes.data());
  }
  bool operator==(const AgentKey& o) const { return bytes == o.bytes; }
};

// A detached Ed25519 signature an author adds to its own statement over something
// derived from it (an attestation, docs/provenance.md).
using AttestationSignature = std::array<std::uint8_t, 64>;

// Highest contiguous sequence held per author.
using VersionVector = std::map<AgentKey, std::uint64_t>;

// Seqs first..last of one author that are void: adverts superseded by the author's very
// next statement, also an advert, so never in force for anything the author said. Their
// bodies are forgotten; the slots still count as held (docs/coordination.md, "Void
// adverts").
struct VoidRange {
  AgentKey author;
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  bool operator==(const VoidRange&) const = default;
};

enum class StatementKind : std::uint8_t {
  kAdvert = 0,
  kPipeline = 1,
  kSourceVersion = 2,
  kClaim = 3,
  kRelease = 4,
  kResult = 5,
  kAccept = 6,
  kCheckpoint = 7,
  kRetry = 8,
  kHorizon = 9,
};
const char* statement_kind_name(StatementKind kind);

struct AdvertPromise {
  std::string pipeline;
  std::string stage;
  Digest stage_digest;
  int capacity = 1;
  bool operator==(const AdvertPromise&) const = default;
};

struct AdvertSource {
  std::string pipeline;
  std::string source;
  bool operator==(const AdvertSource&) const = default;
};

// "I am agent NAME at ENDPOINTS; I promise these stages and provide these sources."
// The latest advert of an author replaces its earlier ones.
struct Advert {
  std::string name;
  std::vector<std::string> endpoints;
  std::vector<AdvertPromise> promises;
  std::vector<AdvertSource> sources;
  bool operator==(const Advert&) const = default;
};

// A pipeline definition an agent loaded, in canonical form, so any agent can draw it.
struct PipelineDef {
  std::string name;
  Digest digest;
  std::string canonical;  // promises::canonical_pipeline() text
  bool operator==(const PipelineDef&) const = default;
};

// "Dataset PIPELINE/SOURCE, version N, is this artifact." Versions increase per
// (author, dataset); a source is provided by one agent or by several with equal content.
struct SourceVersion {
  std::string pipeline;
  std::string source;
  std::uint64_t version = 0;
  ArtifactRef artifact;
  // The provider's Ed25519 signature over the DSSE encoding of this version's in-toto
  // attestation, which is derived from the statement (docs/provenance.md). Empty from
  // agents older than attestations.
  std::optional<AttestationSignature> attestation = std::nullopt;
  bool operator==(const SourceVersion&) const = default;
};

// Enough of a job to identify and explain it without recomputing the plan.
struct JobRef {
  Digest job;
  std::string pipeline;
  std::string stage;
  Digest stage_digest;
  std::string shard;  // empty unless a fan-out shard
  bool operator==(const JobRef&) const = default;
};

struct NamedArtifact {
  std::string name;
  ArtifactRef artifact;
  bool operator==(const NamedArtifact&) const = default;
};

// A statement named by another: its author and sequence number.
struct StatementRef {
  AgentKey author;
  std::uint64_t seq = 0;
  bool operator==(const StatementRef&) const = default;
};

// "I am running job J at epoch E." A claim at epoch E > 1 names the claim at E - 1 it
// supersedes (`supersedes`): an epoch is earned from the one before it, never chosen
// (docs/coordination.md section 5, rule 4). A claim at epoch 1 names none.
struct Claim {
  JobRef job;
  std::uint32_t epoch = 0;
  std::int64_t expected_duration_ms = 0;
  std::optional<StatementRef> supersedes;
  bool operator==(const Claim&) const = default;
};

// "I no longer run job J at epoch E" (lost a tie-break, shut down, or withdrew).
struct Release {
  JobRef job;
  std::uint32_t epoch = 0;
  std::string reason;
  bool operator==(const Release&) const = default;
};

// Where one input of a job came from: the producer's result (or source version) whose
// artifact the consumer fetched, verified and used.
struct InputBinding {
  std::string input;  // local input name (`name/shard` for a fan-in entry)
  Digest digest;
  AgentKey producer;  // author of the result (or source version) used
  std::uint64_t producer_seq = 0;
  bool operator==(const InputBinding&) const = default;
};

// "Job J at epoch E produced these outputs" (or failed). The producer's give (+), and
// with `bindings` the consumer's use (-) of its inputs.
struct JobResult {
  JobRef job;
  std::uint32_t epoch = 0;
  std::vector<NamedArtifact> inputs;   // by local input name
  std::vector<NamedArtifact> outputs;  // by output name; empty on failure
  bool ok = false;
  std::int32_t exit_status = 0;        // exit code, or 128+signal
  std::string error;                   // human reason on failure ("output 'x' missing")
  std::int64_t started_unix_ms = 0;    // wall clock, for humans only
  std::int64_t ended_unix_ms = 0;
  std::optional<Digest> stdout_digest;
  std::optional<Digest> stderr_digest;
  // The executor's Ed25519 signature over the DSSE encoding of the result's in-toto
  // attestation, which is derived from the statement (docs/provenance.md). Successful
  // results only; empty from agents older than attestations.
  std::optional<AttestationSignature> attestation = std::nullopt;
  // The producer of every input (one per input, per entry for a fan-in): what an Accept
  // said before a run until 2026-12-05. Empty in results of older agents.
  std::vector<InputBinding> bindings = {};
  bool operator==(const JobResult&) const = default;
};

// Digest over a result's (name, output digest) pairs sorted by name: the second key of
// the canonical-result min-register (epoch, outputs digest).
Digest outputs_digest(const JobResult& result);

// Whether `binding` agrees with the result it is in: it names one of the result's inputs
// with that input's digest, or `name/entry` with the digest of that entry of a tree
// input (a fan-in's shard).
bool binding_matches_inputs(const JobResult& result, const InputBinding& binding);

// "I fetched and verified these inputs for job J": the consumer's use (-), binding a
// producer's result (by author and seq) to this job. Agents no longer make one (the
// result carries the bindings, docs/coordination.md section 7); those of older agents
// are read, kept and retired as before.
struct Accept {
  JobRef job;
  std::uint32_t epoch = 0;
  using Binding = InputBinding;
  std::vector<Binding> bindings;
  bool operator==(const Accept&) const = default;
};

// "Job J at epoch E saved this checkpoint" (docs/storage.md, later).
struct Checkpoint {
  JobRef job;
  std::uint32_t epoch = 0;
  ArtifactRef artifact;
  bool operator==(const Checkpoint&) const = default;
};

// "Run job J again": a request, signed by the agent a user asked (`vow retry`), to
// forgive the job's failures up to epoch E, so that a job failed past its retries is
// claimable again by the usual rules (candidates that failed it rank last). Failures at
// epochs above E count as before.
struct Retry {
  JobRef job;
  std::uint32_t epoch = 0;  // the highest epoch of the job when the request was made
  std::string reason;       // for humans ("vow retry")
  bool operator==(const Retry&) const = default;
};

// One author's cut in a horizon: its statements 1..seq are behind the horizon, and the
// prefix digest of 1..seq (Ledger::prefix_digest) as the proposer held them.
struct HorizonCut {
  AgentKey author;
  std::uint64_t seq = 0;
  Digest prefix;
  // The author had an advert at or below its cut (and no proof of equivocation was
  // known): a member, whose endorsement the horizon needs.
  bool member = false;
  bool operator==(const HorizonCut&) const = default;
};
// Seqs first..last of the author of cuts[cut] (an index into Horizon::cuts).
struct HorizonRange {
  std::uint32_t cut = 0;
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  bool operator==(const HorizonRange&) const = default;
};
// A statement of the author of cuts[cut], at seq, and the digest of its signed form
// (signed_digest): an agent that takes the horizon takes a statement whose signed form
// has this digest on the horizon's word, without checking its signature again (its
// members did, each from its own ledger). Zero: no digest (a horizon made before it).
struct HorizonRef {
  std::uint32_t cut = 0;
  std::uint64_t seq = 0;
  Digest vouch;
  bool operator==(const HorizonRef&) const = default;
};
// Where the author of cuts[cut]'s line of a dataset starts once the horizon retired the
// versions before it (docs/storage.md, "Old source versions"): `version` is counted as
// the line's first, at `seq`; statements of that line below `seq` are gone.
struct HorizonLineBase {
  std::uint32_t cut = 0;
  std::string pipeline;
  std::string source;
  std::uint64_t version = 0;
  std::uint64_t seq = 0;
  bool operator==(const HorizonLineBase&) const = default;
};

// The ledger's horizon (docs/storage.md, "The ledger horizon"). A proposal names the
// cut (per author a seq and the prefix digest there), the statements behind it that are
// finished with (`retired`: every agent drops them) and the results behind it whose
// standing is settled (`settled`: canonical candidates from now on without their
// claims). It is in force once enough other agents endorse its content, each having
// computed the same from its own ledger; horizons form a chain (number, previous).
// An endorsement names the proposal and its content digest and carries no lists.
struct Horizon {
  std::uint64_t number = 0;  // 1, 2, ... along the chain
  Digest previous;           // content digest of horizon number - 1 (zero for the first)
  std::vector<HorizonCut> cuts;
  std::vector<HorizonRange> retired;
  std::vector<HorizonRef> settled;
  std::optional<StatementRef> endorses;  // set: an endorsement of this proposal
  Digest content;  // a proposal: its own content digest; an endorsement: the proposal's
  // The proposal also retires superseded jobs: those the plan made from the statements
  // at its cut no longer has (docs/storage.md, "Superseded jobs").
  bool superseded = false;
  std::vector<HorizonLineBase> bases;  // source lines it moves the start of
  // A checkpoint (docs/storage.md, "Checkpoints"): its lists state the whole of what the
  // chain up to it leaves, not what it adds to the horizon before it. `retired` covers
  // every slot behind the cut that is not kept (earlier horizon statements among them),
  // `settled` names every settled result kept and `bases` every line base, so an agent
  // can apply it without any horizon before it.
  bool checkpoint = false;
  bool operator==(const Horizon&) const = default;
};
// Digest of a proposal's content (number, previous, cuts, retired, settled, superseded,
// bases).
Digest horizon_content(const Horizon& h);

using StatementBody = std::variant<Advert, PipelineDef, SourceVersion, Claim, Release, JobResult,
                                   Accept, Checkpoint, Retry, Horizon>;

// A statement as its author signed it: the encoding (transport/codec.h) and the
// detached Ed25519 signature over exactly those bytes, or, for a statement its author
// published with others at once, over the root of their batch, which `path` leads to
// from these bytes (promises/batch_proof.h). The core never reads it; it travels with
// the statement's value so that storing and relaying a statement need no table beside
// it. Empty until the statement is signed (own) or verified (a peer's).
struct SignedForm {
  std::string bytes;
  std::array<std::uint8_t, 64> signature{};
  std::string path = {};  // empty: signed alone
  bool empty() const { return bytes.empty(); }
  bool operator==(const SignedForm&) const = default;
};
// Digest of a signed form: its bytes, its signature and its path (HorizonRef::vouch).
// Zero for an empty form (a statement not signed yet).
Digest signed_digest(std::string_view bytes, const std::array<std::uint8_t, 64>& signature,
                     std::string_view path = {});
inline Digest signed_digest(const SignedForm& f) {
  return f.empty() ? Digest{} : signed_digest(f.bytes, f.signature, f.path);
}

struct Statement {
  AgentKey author;
  std::uint64_t seq = 0;          // 1, 2, 3, ... per author
  std::int64_t wall_unix_ms = 0;  // for humans only, never for decisions
  StatementBody body;
  SignedForm signed_form;  // not part of the value: equality ignores it

  StatementKind kind() const { return static_cast<StatementKind>(body.index()); }
  // The job a claim, release, result, accept or checkpoint is about.
  std::optional<Digest> job() const;
  bool operator==(const Statement& o) const {
    return author == o.author && seq == o.seq && wall_unix_ms == o.wall_unix_ms && body == o.body;
  }
};

// Whether `st` made the artifact `digest`: a successful result with it as an output (or
// an output's entry), or a source version of it (or with it as an entry). What a
// binding's producer must have done for the binding to be lineage.
bool made_artifact(const Statement& st, const Digest& digest);

// The epoch of a claim, release, result, accept, checkpoint or retry; 0 for the others.
std::uint32_t statement_epoch(const Statement& st);

}  // namespace vow
