# The vow wire protocol, version 1. This file is the specification: every frame on a
# vow link is one Cap'n Proto message (standard framing, not packed) whose root is an
# Envelope. docs/protocol.md explains identity, signing, validation and streaming.
#
# Evolution rules (never break them):
#   - fields and union members are only ever appended, with the next free ordinal;
#   - an ordinal is never reused, a field never changes type or meaning;
#   - Envelope.protocolVersion changes only for an incompatible change, which the rules
#     above exist to avoid; a receiver rejects a version it does not speak.
# Cap'n Proto gives appended fields their default value in old messages, and old
# readers ignore fields they do not know, so appending keeps both directions working.
#
# Integers are little-endian fixed width, as Cap'n Proto encodes them. Keys are raw
# 32-byte Ed25519 public keys, digests raw 32-byte BLAKE2b-256, signatures 64 bytes.
#
# UNUSED marks a field or union member that keeps its ordinal but carries nothing: new
# senders do not set it, receivers ignore it (docs/protocol.md section 8 says what an
# old sender's value becomes). It is never reused for anything else.

@0xb39db3f03ff3ff34;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("vow::transport::wire");

const protocolVersion :UInt32 = 1;

# ---------------------------------------------------------------------------------
# Envelope: the root of every frame.

struct Envelope {
  protocolVersion @0 :UInt32;   # the sender's protocol version; must equal ours (1)
  body :union {
    hello @1 :Hello;
    heartbeat @2 :Heartbeat;
    statement @3 :SignedStatement;   # UNUSED: statements travel in ledgerBatch, even one
                                     # at a time; an old sender's is taken as a batch of one
    ledgerRequest @4 :LedgerRequest;
    ledgerBatch @5 :LedgerBatch;
    fetchRequest @6 :FetchRequest;
    chunk @7 :Chunk;
    credit @8 :Credit;
    fetchError @9 :FetchError;
    controlRequest @10 :ControlRequest;
    controlResponse @11 :ControlResponse;
    haveRequest @12 :HaveRequest;
    have @13 :Have;
    probe @14 :Probe;
  }
}

# ---------------------------------------------------------------------------------
# Membership (docs/coordination.md). The sender of these is the link's authenticated key
# (CurveZMQ), so they are not signed.

# First message on a link, in both directions, and again whenever the sender's
# endpoints change. Sums the sender's version vector (constant in size, whatever the
# mesh): a receiver whose sum is smaller asks the sender for what it misses with a
# LedgerRequest (docs/coordination.md section 8).
struct Hello {
  agent @0 :Data;                     # sender's Ed25519 key; must equal the link's key
  name @1 :Text;                      # human name from the agent config
  endpoints @2 :List(Text);           # where the sender listens ("tcp://host:port")
  protocolVersion @3 :UInt32;         # highest version the sender speaks (informative:
                                      # receivers check Envelope.protocolVersion)
  versionVector @4 :List(VersionEntry);  # UNUSED (was: the sender's version vector, N
                                      # entries on each of N hellos; vvSum replaces it)
  vvSum @5 :UInt64;                   # sum of the sender's version vector
}

struct VersionEntry {
  author @0 :Data;                    # Ed25519 key
  seq @1 :UInt64;                     # highest contiguous sequence held of this author
  prefixDigest @2 :Data;              # LedgerRequest only, optional: digest of this
                                      # author's statements 1..seq as the sender holds
                                      # them; a responder holding other statements
                                      # there sends its own (equivocation, section 8
                                      # of docs/coordination.md). Empty: not given.
}

# Sent at a fixed interval (default 100 ms). Missing heartbeats make a peer suspect,
# then dead. Small on purpose.
struct Heartbeat {
  running @0 :UInt32;                 # jobs running now
  capacity @1 :UInt32;                # jobs it may run at once (sum over its promises)
  activeClaims @2 :UInt32;            # UNUSED (was: the size of `claims`)
  highestSeq @3 :UInt64;              # UNUSED (was: the sender's own latest seq; vvSum
                                      # tells a receiver when to sync)
  claims @4 :List(ActiveClaim);       # UNUSED (was: its claims without a result; claims
                                      # are statements, and the ledger has them all)
  vvSum @5 :UInt64;                   # sum of the sender's version vector: a cheap
                                      # "my ledger changed" signal that triggers a sync
  holdingsIncarnation @6 :UInt64;     # with holdingsVersion: the version of the set of
  holdingsVersion @7 :UInt64;         # artifacts it holds; a change asks for a Have

  struct ActiveClaim {                # only in the UNUSED `claims`
    job @0 :Data;                     # job id digest
    epoch @1 :UInt32;
  }
}

# SWIM membership with Lifeguard (docs/coordination.md, "Membership"): a ping is
# answered with an ack; a pingReq asks the receiver to ping `target` and relay its ack.
# Each carries the sender's incarnation, at most 16 membership updates (gossip) and the
# sender's load and change signals (as a Heartbeat). Replaces heartbeats in the SWIM
# profiles.
struct Probe {
  kind @0 :Kind;
  seq @1 :UInt64;                     # the prober's; an ack repeats it (0: no ack expected)
  target @2 :Data;                    # pingReq: the agent to probe; relayed ack: the agent
                                      # that answered; empty otherwise
  incarnation @3 :UInt64;             # the sender's own incarnation
  updates @4 :List(MemberUpdate);     # at most 16
  load @5 :Heartbeat;                 # the sender's load, vvSum and holdings version

  enum Kind {
    ping @0;
    ack @1;
    pingReq @2;
    nack @3;                          # a pingReq helper: the target did not answer it
  }
  struct MemberUpdate {
    agent @0 :Data;                   # Ed25519 key
    incarnation @1 :UInt64;
    state @2 :State;
    origin @3 :Data;                  # suspect: the agent that suspected; else empty
    enum State {
      alive @0;
      suspect @1;
      dead @2;
    }
  }
}

# "Tell me which artifacts you hold" (answered with Have). The fields name the holdings
# version the requester last applied (0, 0: none): the answer may then be a delta from
# it. A sender that leaves them unset (older agents) is always answered with the
# complete set.
struct HaveRequest {
  incarnation @0 :UInt64;             # of the latest Have applied from the receiver
  version @1 :UInt64;
}

# The artifacts the sender holds, at a holdings version: the complete set, or (delta
# set) what changed since `baseVersion` of the same incarnation, which the requester
# named in its HaveRequest. Only a requester that named a version is sent a delta, so
# agents that do not know these fields only ever see complete sets.
struct Have {
  incarnation @0 :UInt64;             # changes when the sender restarts
  version @1 :UInt64;                 # increases when its set changes
  digests @2 :List(Data);             # 32-byte digests: the set, or in a delta the added
  delta @3 :Bool;                     # false: `digests` is the complete set
  baseVersion @4 :UInt64;             # delta: the version it applies to
  removed @5 :List(Data);             # delta: digests no longer held
}

# ---------------------------------------------------------------------------------
# Statements (docs/protocol.md).
#
# Signing rule: `bytes` is a complete Cap'n Proto message (standard framing) whose root
# is a StatementBody, exactly as its author serialized it; `signature` is the Ed25519
# detached signature of the author (StatementBody.author) over exactly those bytes.
# Relays and stores keep (bytes, signature) untouched, so anyone verifies it later.
struct SignedStatement {
  bytes @0 :Data;
  signature @1 :Data;                 # 64 bytes
  path @2 :Data;                      # empty: the signature is over `bytes`; else the
                                      # statement's place in the batch its author signed
                                      # at once, the signature over the batch's root
                                      # (docs/protocol.md, "Statements signed together")
}

struct StatementBody {
  author @0 :Data;                    # Ed25519 key of the signer
  seq @1 :UInt64;                     # 1, 2, 3, ... per author, strictly increasing
  wallUnixMs @2 :Int64;               # wall clock, for humans only
  body :union {
    advert @3 :Advert;
    pipeline @4 :PipelineDef;
    sourceVersion @5 :SourceVersion;
    claim @6 :Claim;
    release @7 :Release;
    result @8 :JobResult;
    accept @9 :Accept;
    checkpoint @10 :Checkpoint;
    retry @11 :Retry;
    horizon @12 :Horizon;
  }
}

struct TreeEntry {
  name @0 :Text;
  kind @1 :UInt8;                     # 'f' file, 'x' executable, 'd' directory
  digest @2 :Data;
}

struct ArtifactRef {
  digest @0 :Data;
  isTree @1 :Bool;
  sizeBytes @2 :UInt64;               # file length; tree: sum of file lengths
  entries @3 :List(TreeEntry);        # trees only: top-level entries, sorted by name
}

struct NamedArtifact {
  name @0 :Text;
  artifact @1 :ArtifactRef;
}

struct JobRef {
  job @0 :Data;                       # job id digest
  pipeline @1 :Text;
  stage @2 :Text;
  stageDigest @3 :Data;
  shard @4 :Text;                     # empty unless a fan-out shard
}

# "I am agent NAME at ENDPOINTS; I promise these stages and provide these sources."
struct Advert {
  name @0 :Text;
  endpoints @1 :List(Text);
  promises @2 :List(Promise);
  sources @3 :List(Source);

  struct Promise {
    pipeline @0 :Text;
    stage @1 :Text;
    stageDigest @2 :Data;
    capacity @3 :Int32;
  }
  struct Source {
    pipeline @0 :Text;
    source @1 :Text;
  }
}

# A pipeline definition in canonical form.
struct PipelineDef {
  name @0 :Text;
  digest @1 :Data;
  canonical @2 :Text;
}

# "Dataset PIPELINE/SOURCE, version N, is this artifact."
struct SourceVersion {
  pipeline @0 :Text;
  source @1 :Text;
  version @2 :UInt64;
  artifact @3 :ArtifactRef;
  attestation @4 :Data;               # empty: none; else the provider's 64-byte
                                      # signature of the version's attestation
                                      # (docs/provenance.md)
}

# "I am running job J at epoch E." A claim at epoch E > 1 names the claim at E - 1 it
# supersedes; one that names none (or a claim that is not in the ledger at E - 1) is
# kept as evidence but fences nothing (docs/coordination.md section 5).
struct Claim {
  job @0 :JobRef;
  epoch @1 :UInt32;
  expectedDurationMs @2 :Int64;
  supersedesAuthor @3 :Data;          # author of the superseded claim; empty: none
  supersedesSeq @4 :UInt64;           # its seq (0 when supersedesAuthor is empty)
}

# "I no longer run job J at epoch E."
struct Release {
  job @0 :JobRef;
  epoch @1 :UInt32;
  reason @2 :Text;
}

# "Job J at epoch E produced these outputs" (or failed).
struct JobResult {
  job @0 :JobRef;
  epoch @1 :UInt32;
  inputs @2 :List(NamedArtifact);
  outputs @3 :List(NamedArtifact);
  ok @4 :Bool;
  exitStatus @5 :Int32;
  error @6 :Text;
  startedUnixMs @7 :Int64;
  endedUnixMs @8 :Int64;
  stdoutDigest @9 :Data;              # empty: none
  stderrDigest @10 :Data;             # empty: none
  attestation @11 :Data;              # empty: none; else the executor's 64-byte
                                      # signature of the result's attestation
                                      # (docs/provenance.md)
  bindings @12 :List(Accept.Binding); # the producer of every input (the consumer's
                                      # use); empty from agents older than 2026-12-05
}

# "I fetched and verified these inputs for job J" (the consumer's use). Made by agents
# older than 2026-12-05; a result's bindings say it now.
struct Accept {
  job @0 :JobRef;
  epoch @1 :UInt32;
  bindings @2 :List(Binding);

  struct Binding {
    input @0 :Text;
    digest @1 :Data;
    producer @2 :Data;                # Ed25519 key of the result's author
    producerSeq @3 :UInt64;
  }
}

# "Job J at epoch E saved this checkpoint."
struct Checkpoint {
  job @0 :JobRef;
  epoch @1 :UInt32;
  artifact @2 :ArtifactRef;
}

# "Run job J again" (`vow retry`): failures of the job at epochs up to `epoch` no longer
# count, so a job failed past its retries is claimable again. Signed by the agent a user
# asked; any trusted agent may sign one.
struct Retry {
  job @0 :JobRef;
  epoch @1 :UInt32;                   # the job's highest epoch when the request was made
  reason @2 :Text;                    # for humans
}

# The ledger's horizon (docs/storage.md, "The ledger horizon"): a proposal names per
# author a cut and the prefix digest there, the statements behind the cut that every
# agent drops (`retired`) and the results behind it whose standing is settled
# (`settled`); an endorsement names the proposal and its content digest, with empty lists.
struct Horizon {
  number @0 :UInt64;                  # 1, 2, ... along the chain
  previous @1 :Data;                  # content digest of horizon number - 1
  cuts @2 :List(Cut);
  retired @3 :List(Range);
  settled @4 :List(Ref);
  endorsesAuthor @5 :Data;            # empty: a proposal; else the proposal's author
  endorsesSeq @6 :UInt64;
  content @7 :Data;                   # the proposal's content digest
  superseded @8 :Bool;                # also retires the jobs the plan at its cut has not
  bases @9 :List(LineBase);           # source lines that start later from now on
  checkpoint @10 :Bool;               # its lists state the whole chain up to it

  struct Cut {
    author @0 :Data;
    seq @1 :UInt64;
    prefix @2 :Data;
    member @3 :Bool;                  # had an advert at or below its cut: must endorse
  }
  struct Range {
    cut @0 :UInt32;                   # index into cuts: whose seqs
    first @1 :UInt64;
    last @2 :UInt64;
  }
  struct Ref {
    cut @0 :UInt32;
    seq @1 :UInt64;
    vouch @2 :Data;                   # digest of its signed form (bytes and signature);
                                      # empty: none (a horizon made before it)
  }
  struct LineBase {
    cut @0 :UInt32;                   # index into cuts: the provider
    pipeline @1 :Text;
    source @2 :Text;
    version @3 :UInt64;               # the first version its line counts from now on
    seq @4 :UInt64;                   # the provider's statement of that version
  }
}

# ---------------------------------------------------------------------------------
# Ledger anti-entropy (docs/coordination.md).

# "This is what I hold; send me what I miss."
struct LedgerRequest {
  have @0 :List(VersionEntry);
  horizon @1 :UInt64;                 # the last ledger horizon the sender applied: it
                                      # holds every horizon statement up to it
  summary @2 :Data;                   # set (32 bytes): a summary-only request (`have`
                                      # empty), the digest of what the sender holds
                                      # (docs/coordination.md, "Anti-entropy")
}

# Statements pushed (new own statements) or sent in answer to a
# LedgerRequest, each verified on its own by the receiver.
struct LedgerBatch {
  statements @0 :List(SignedStatement);
  more @1 :Bool;                      # UNUSED (was: the sender had more; a receiver that
                                      # still lacks statements learns it from the next
                                      # heartbeat's vvSum and asks again)
  voids @2 :List(VoidRange);          # slots the sender holds void: adverts superseded
                                      # by their author's next statement, also an
                                      # advert (docs/coordination.md, "Void adverts");
                                      # a hint, taken once the receiver holds the
                                      # advert above a range
  answer @3 :Bool;                    # the last batch of an answer to a ledgerRequest
                                      # (pushes, proofs and batches an answer sends
                                      # ahead of its last are not): the asker's pull
                                      # goes on or ends on it; passed on to the asker
                                      # even when every statement in it was refused
  cut @4 :Bool;                       # with answer: the answer left out statements the
                                      # asker lacks (limits, or horizons it must take
                                      # first); the asker asks again
  attached @5 :List(Attached);        # small outputs of the results pushed in it
                                      # (docs/coordination.md, "Small outputs travel
                                      # with their result"); each at most 4,096 bytes,
                                      # 64 KiB in all, else the batch is malformed
}

# A file's bytes, named by their BLAKE2b-256 digest (checked by whoever uses them).
struct Attached {
  digest @0 :Data;                    # 32 bytes
  bytes @1 :Data;
}

struct VoidRange {
  author @0 :Data;                    # Ed25519 key
  first @1 :UInt64;                   # first..last void, at most 4,096 seqs
  last @2 :UInt64;
}

# ---------------------------------------------------------------------------------
# Artifact streaming (docs/coordination.md). The receiver opens a stream with a FetchRequest
# giving `credits` chunks it can take; the sender sends at most that many chunks, and
# the receiver grants more with Credit as it consumes them. Chunks are sent in offset
# order from `offset`; the receiver verifies BLAKE2b-256 of the whole file at the end.

struct FetchRequest {
  streamId @0 :UInt64;                # chosen by the receiver, unique per link
  artifact @1 :Data;                  # digest of the file artifact
  offset @2 :UInt64;                  # resume point: first byte wanted
  credits @3 :UInt32;                 # chunks the sender may send before more credit
  chunkBytes @4 :UInt32;              # wanted chunk size (sender may send less)
  # Integrity-only bulk (docs/protocol.md, "Bulk without encryption"): the receiver's
  # plain (NULL mechanism) ROUTER listens on this TCP port of the host the sender dials it
  # at; a sender that allows it sends the chunks there, each frame led by bulkToken (16
  # random bytes naming the stream). 0: chunks on this link, as always.
  bulkPort @5 :UInt16;
  bulkToken @6 :Data;
}

struct Chunk {
  streamId @0 :UInt64;
  offset @1 :UInt64;                  # position of data[0] in the artifact
  totalBytes @2 :UInt64;              # artifact length
  data @3 :Data;
  last @4 :Bool;                      # no more chunks follow on this stream
}

struct Credit {
  streamId @0 :UInt64;
  credits @1 :UInt32;                 # additional chunks the sender may send
  cancel @2 :Bool;                    # receiver gives up: sender stops and forgets
}

struct FetchError {
  streamId @0 :UInt64;
  code @1 :UInt8;                     # vow StatusCode (2 not found, 5 overloaded, ...)
  message @2 :Text;
}

# ---------------------------------------------------------------------------------
# Control queries (the command line, dashboards): a method name and JSON text.

struct ControlRequest {
  requestId @0 :UInt64;
  method @1 :Text;                    # "status", "jobs", "job", "lineage", ...
  json @2 :Text;                      # arguments, a JSON object
}

struct ControlResponse {
  requestId @0 :UInt64;
  ok @1 :Bool;
  json @2 :Text;                      # the answer, JSON
  error @3 :Text;                     # when not ok
}
