// Validator: the gate every inbound frame passes before anything else in the agent sees
// it (docs/protocol.md). In order: frame size, Cap'n Proto framing and decoding with
// traversal limits, protocol version, sender role, then for each statement: signature,
// trusted author, sequence. A frame that fails is dropped, counted under its
// RejectReason, and logged at a rate limit; nothing rejected reaches the caller. A
// statement batch arrives holding only signed forms (promises::StatementBatch): each is
// verified and replaced by its value, those that fail are dropped and counted one by
// one, and a batch left with no statement is dropped whole.
//
// The validator borrows the TrustSet and the SequenceView (both must outlive it) and
// owns its counters. Not thread-safe: one event-loop thread.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>

#include "promises/statement.h"
#include "transport/codec.h"
#include "transport/identity.h"
#include "transport/message.h"

namespace vow::transport {

enum class RejectReason : std::uint8_t {
  kOversized = 0,    // frame larger than the frame limit
  kTruncated,        // framing declares more bytes than arrived
  kMalformed,        // not a valid Envelope (bad framing, Cap'n Proto, field sizes)
  kBadVersion,       // protocol version we do not speak
  kNotAllowed,       // a client key sent something other than a control message
  kPeerMismatch,     // a hello naming another key than the link's authenticated key
  kBadSignature,     // statement signature does not verify under its named author
  kWrongAuthor,      // statement signed by the sending peer but naming another author
  kUntrustedAuthor,  // valid signature by a key we do not trust
  kReplayed,         // UNUSED (was: a different statement at the highest seq held)
  kStaleSequence,    // UNUSED (was: a different statement below the highest seq held)
};
inline constexpr std::size_t kRejectReasonCount = 11;
const char* reject_reason_name(RejectReason reason);

using RejectCounts = std::array<std::uint64_t, kRejectReasonCount>;

// What the agent already holds per author; the ledger implements it. A statement whose
// seq is at or below highest_seq(author) is either held already (dropped quietly) or
// equivocation evidence: its author signed two statements with one seq.
class SequenceView {
 public:
  virtual ~SequenceView() = default;
  // Highest sequence held of `author` (0: none).
  virtual std::uint64_t highest_seq(const AgentKey& author) const = 0;
  // True if exactly these bytes are already held as (author, seq), at any seq (above
  // highest_seq too: statements held above a gap). Anti-entropy makes such duplicates
  // normal (a statement pushed and synced at once, a catch-up pulling from two peers):
  // they are dropped without counting as rejections, before any signature check. A
  // different statement at a held seq is a replay.
  virtual bool holds_identical(const AgentKey& author, std::uint64_t seq,
                               std::string_view bytes) const {
    (void)author, (void)seq, (void)bytes;
    return false;
  }
  // True if (author, seq) is a void slot (an advert superseded at once, whose body is
  // gone): an advert there again is no news, not equivocation evidence.
  virtual bool is_void(const AgentKey& author, std::uint64_t seq) const {
    (void)author, (void)seq;
    return false;
  }
  // Whether (author, seq) was retired by a horizon (docs/storage.md): a statement
  // arriving there is an old one a peer still holds, not news and not equivocation.
  virtual bool is_retired(const AgentKey& author, std::uint64_t seq) const {
    (void)author;
    (void)seq;
    return false;
  }
  // The digest of the signed form (bytes and signature) an applied horizon gave for
  // the settled statement (author, seq) not held yet (promises::Ledger::vouched): a
  // statement arriving there with that digest is taken without checking its signature.
  virtual std::optional<Digest> vouched(const AgentKey& author, std::uint64_t seq) const {
    (void)author;
    (void)seq;
    return std::nullopt;
  }
};

// A SequenceView that holds nothing: every sequence is new (clients, tests).
class NoSequences final : public SequenceView {
 public:
  std::uint64_t highest_seq(const AgentKey&) const override { return 0; }
};

enum class LogLevel : std::uint8_t { kDebug, kInfo, kWarn, kError };
// Where transport logs go (the agent plugs spdlog in). May be empty: no logging.
using LogSink = std::function<void(LogLevel, std::string_view)>;

// A message that passed validation, with the authenticated key of the link it came on.
struct Inbound {
  AgentKey peer;
  PeerRole role = PeerRole::kAgent;
  Message message;
};

class Validator {
 public:
  // Rate limit of rejection log lines: at most kLogLinesPerWindow per reason per window.
  static constexpr int kLogLinesPerWindow = 5;
  static constexpr std::int64_t kLogWindowMs = 10'000;

  Validator(const TrustSet* trust, const SequenceView* sequences, std::size_t max_frame_bytes,
            LogSink log);

  // Validates one frame from `peer` (authenticated by the link). nullopt if rejected.
  std::optional<Message> validate(std::span<const std::uint8_t> frame, const AgentKey& peer,
                                  PeerRole role);
  // Validates one statement relayed by `peer`; on success `out` holds the decoded value.
  bool validate_statement(const SignedStatement& s, const AgentKey& peer, Statement* out);
  // Batches of at least this many statements have their signatures checked on two
  // threads (a catch-up is mostly signature checks); smaller ones on the caller's.
  static constexpr std::size_t kParallelVerifyMin = 64;

  // Monotonic time for the log rate limit (the agent's clock; the validator has none).
  void set_now(std::int64_t now_ms) { now_ms_ = now_ms; }
  const RejectCounts& rejects() const { return counts_; }
  std::uint64_t rejected(RejectReason r) const { return counts_[static_cast<std::size_t>(r)]; }
  std::uint64_t total_rejected() const;
  // Statements already held byte for byte: dropped, not rejected.
  std::uint64_t duplicates() const { return duplicates_; }
  // Statements at a held seq with other bytes (validly signed by a trusted author):
  // equivocation evidence, passed on to the core as any statement, which keeps it as
  // proof that its author equivocated (docs/coordination.md section 8).
  std::uint64_t equivocations() const { return equivocations_; }
  // Statements taken on a horizon's word (SequenceView::vouched): their signature was
  // not checked here.
  std::uint64_t vouched() const { return vouched_; }
  // Statements signed together with one checked before (in the same frame, or among the
  // last kRecentBatches batches checked): their signature was not checked again, only
  // their path to the batch's root.
  std::uint64_t shared() const { return shared_; }
  static constexpr std::size_t kRecentBatches = 8;

 private:
  void reject(RejectReason reason, const AgentKey& peer, std::string_view detail);
  // validate_statement in two steps: decoding (false: undecodable, counted, or held
  // byte for byte, counted as a duplicate) and, once the signature was checked (`good`),
  // the rest: what a bad signature was, trust, equivocation.
  bool decode_fresh(const SignedStatement& s, const AgentKey& peer, Statement* st);
  // True if an applied horizon vouches for exactly this signed form at its slot.
  bool is_vouched(const Statement& st, const SignedStatement& s);
  bool finish_statement(Statement st, const SignedStatement& s, const AgentKey& peer, bool good,
                        Statement* out);
  // A batch signature checked: its author, root and signature.
  struct Batch {
    AgentKey author;
    Digest root;
    Signature signature{};
    bool operator==(const Batch&) const = default;
  };
  bool recently_checked(const Batch& b) const;
  void checked(const Batch& b);
  // Whether ST (decoded from S) is signed by its author: over its bytes, or, found among
  // the batches recently checked or checked now, over its batch's root.
  bool signature_good(const Statement& st, const SignedStatement& s);

  const TrustSet* trust_;
  const SequenceView* sequences_;
  std::size_t max_frame_bytes_;
  LogSink log_;
  std::int64_t now_ms_ = 0;
  RejectCounts counts_{};
  std::uint64_t duplicates_ = 0;
  std::uint64_t equivocations_ = 0;
  std::uint64_t vouched_ = 0;
  std::uint64_t shared_ = 0;
  std::array<Batch, kRecentBatches> recent_{};
  std::size_t recent_next_ = 0;
  struct LogWindow {
    std::int64_t start_ms = INT64_MIN;
    int lines = 0;
    std::uint64_t suppressed = 0;
  };
  std::array<LogWindow, kRejectReasonCount> log_windows_{};
};

}  // namespace vow::transport
