// Messages between agents: the one declaration of what the core sends and receives
// (hello, heartbeat, sync request, statement batch, have request, have, probe). The core
// (core.h) produces and consumes them; the transport (transport/message.h) carries these
// same types, and its codec encodes them as transport/protocol.capnp specifies, so no
// layer copies them field by field.
//
// Limits: a batch the core sends in answer to a sync holds at most kMaxStatementsPerSync
// statements and a Have at most kMaxHoldingsPerHave digests (core.h); the codec bounds
// every list it decodes (transport/codec.h, kMaxListItems).
//
// Value types that own their data; thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "promises/statement.h"

namespace vow::promises {

// First message on a link, both ways (Core::peer_connected), and the answer to a seed's
// hello. Names the sender and where it listens, so the receiver links back to it, and
// sums its version vector, as a heartbeat does (not the vector itself: links come up
// with every peer at once, and N entries on each of N hellos grow with N^2): a
// receiver whose sum is smaller asks the sender for a sync (at most kMaxPullPeers such
// requests per heartbeat_ms, so a joining agent pulls from one or two peers); one whose
// sum is not smaller does nothing (the sender, if it holds less, asks it).
struct Hello {
  AgentKey agent;                      // the sender (must be the link's authenticated key)
  std::string name;                    // human name from its config
  std::vector<std::string> endpoints;  // where it listens ("tcp://host:port")
  std::uint64_t vv_sum = 0;            // sum of its version vector (Ledger::vv_sum)
  bool operator==(const Hello&) const = default;
};

// Sent every heartbeat_ms: liveness, load, and cheap change signals (a ledger sum and a
// holdings version) that make the receiver ask for a sync or a Have.
struct Heartbeat {
  std::uint32_t running = 0;   // jobs running now
  std::uint32_t capacity = 0;  // sum of promised capacities
  std::uint64_t vv_sum = 0;    // sum of the sender's version vector
  std::uint64_t holdings_incarnation = 0;
  std::uint64_t holdings_version = 0;
  bool operator==(const Heartbeat&) const = default;
};

// "This is what I hold; send me what I miss" (answered with a StatementBatch).
// `digests` gives, per author of `have` (those the sender does not know to equivocate),
// the digest of that author's statements 1..seq as the sender holds them
// (Ledger::prefix_digest): a responder that holds other statements there has found an
// equivocation the version vector cannot show, and sends its own (docs/coordination.md
// section 8). The answer also carries every equivocation proof the responder holds.
struct SyncRequest {
  VersionVector have;
  std::map<AgentKey, Digest> digests;
  // The last ledger horizon the sender applied (0: none): it holds the horizon
  // statements up to it even where they lie above its marks, so they go last.
  std::uint64_t horizon = 0;
  // Set: a summary-only request (`have` and `digests` empty): the sender's
  // Ledger::summary(). A receiver whose own differs answers with a full request of its
  // own (and the sender then asks back), one whose summary is the same stays silent, so
  // an idle mesh's periodic anti-entropy costs a constant-size message whatever N.
  std::optional<Digest> summary = std::nullopt;
  bool operator==(const SyncRequest&) const = default;
};

// A small file's bytes travelling with the batch whose result names it as an output
// (docs/coordination.md, "Small outputs travel with their result"). Not the core's:
// the agent's shell attaches them to its own results and takes them off a received
// batch before the core sees it. Trusted for nothing: whoever uses one checks the bytes
// against the digest, as a transfer's.
struct Attached {
  Digest digest;
  std::string bytes;
  bool operator==(const Attached&) const = default;
};
// A file of at most this many bytes travels with its result.
inline constexpr std::size_t kMaxAttachedBytes = 4096;
// The attached bytes of one batch, at most (the sender stops attaching there; a
// receiver refuses a batch past it as malformed).
inline constexpr std::size_t kMaxAttachedBatchBytes = 64 << 10;

// Statements pushed (new own statements) or sent in answer to a sync request.
//
// Every statement in a batch the core sends carries its signed form (own statements
// are signed when made, peers' were verified on arrival): the signed forms are what
// travels, and encoding a batch with an unsigned statement fails (a bug). A batch
// decoded from the wire holds statements with ONLY their signed form set (author, seq
// and body are empty) until the transport's validator verifies each and replaces it
// with the verified value, dropping those that fail; the core only ever sees verified
// statements. Equal batches hold equal statements with equal signed forms.
struct StatementBatch {
  std::vector<Statement> statements;
  // Slots the sender holds void (Ledger, "void adverts"): a hint the receiver takes
  // once it holds the advert above each range, after the statements.
  std::vector<VoidRange> voids = {};
  // The last batch of an answer to a SyncRequest (a pushed statement, a proof, and the
  // batches an answer sends before its last are not): the asker's pull goes on or ends
  // on this one alone (Core::Impl::continue_pull). `cut`: the answer left out
  // statements the asker lacks (a limit on statements or bytes, or the asker has
  // horizons to take first): it asks again. An answer whose statements were all
  // refused on arrival (authors the asker does not trust) still reaches the asker,
  // empty.
  bool answer = false;
  bool cut = false;
  // Small outputs of the results in `statements` (a push of the sender's own results
  // only), each at most kMaxAttachedBytes, kMaxAttachedBatchBytes in all.
  std::vector<Attached> attached = {};
  bool operator==(const StatementBatch& o) const;
};

// "Tell me which artifacts you hold" (answered with Have), naming the holdings version
// of the receiver the sender last applied ({0, 0}: none), so that the answer can be a
// delta from it.
struct HaveRequest {
  std::uint64_t incarnation = 0;
  std::uint64_t version = 0;
  bool operator==(const HaveRequest&) const = default;
};

// The sender's held artifacts at a holdings version (see Heartbeat): the complete set
// (`delta` false), or what changed since `base_version` of the same incarnation: added
// in `digests`, no longer held in `removed` (Holdings::have_since).
struct Have {
  std::uint64_t incarnation = 0;  // changes when the sender restarts
  std::uint64_t version = 0;      // increases when its set changes
  std::vector<Digest> digests;    // the set, or in a delta the digests added
  bool delta = false;
  std::uint64_t base_version = 0;  // delta: applies to this version
  std::vector<Digest> removed;     // delta: no longer held
  bool operator==(const Have&) const = default;
};

// SWIM membership (promises/swim.h, docs/coordination.md "Membership"): what one agent
// says about another (its incarnation and whether it is alive, suspected or dead).
enum class MemberState : std::uint8_t { kAlive = 0, kSuspect = 1, kDead = 2 };
struct MemberUpdate {
  AgentKey agent;
  std::uint64_t incarnation = 0;
  MemberState state = MemberState::kAlive;
  // A suspicion: the agent that suspected (independent confirmations shorten it).
  std::optional<AgentKey> origin;
  bool operator==(const MemberUpdate&) const = default;
};
// At most this many updates ride on one probe message (the codec refuses more).
inline constexpr std::size_t kMaxProbeUpdates = 16;

// A SWIM protocol message: a ping (answered with an ack), a ping-req (the receiver pings
// `target` on the sender's behalf and relays the ack), or an ack. Each carries the
// sender's own incarnation, a few membership updates (piggybacked gossip) and the
// sender's load and change signals, as a heartbeat does.
struct Probe {
  // kNack: a ping-req helper's "the target did not answer me in time" (Lifeguard), so
  // the prober can tell a dead target (helpers nack) from its own trouble (no nack).
  enum class Kind : std::uint8_t { kPing = 0, kAck = 1, kPingReq = 2, kNack = 3 };
  Kind kind = Kind::kPing;
  std::uint64_t seq = 0;           // chosen by the prober; an ack repeats it (0: none expected)
  std::optional<AgentKey> target;  // ping-req: the agent to probe; relayed ack: who answered
  std::uint64_t incarnation = 0;   // the sender's
  std::vector<MemberUpdate> updates;
  Heartbeat load;
  bool operator==(const Probe&) const = default;
};

using MessageBody =
    std::variant<Hello, Heartbeat, SyncRequest, StatementBatch, HaveRequest, Have, Probe>;
struct Message {
  MessageBody body;
  bool operator==(const Message&) const = default;
};

inline bool StatementBatch::operator==(const StatementBatch& o) const {
  if (statements.size() != o.statements.size() || voids != o.voids || answer != o.answer ||
      cut != o.cut || attached != o.attached) {
    return false;
  }
  for (std::size_t i = 0; i < statements.size(); ++i) {
    const Statement& a = statements[i];
    const Statement& b = o.statements[i];
    if (!(a == b) || a.signed_form != b.signed_form) return false;
  }
  return true;
}

}  // namespace vow::promises
