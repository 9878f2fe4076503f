#include "transport/validator.h"

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "promises/batch_proof.h"

namespace vow::transport {
namespace {

RejectReason reason_of(DecodeError e) {
  switch (e) {
    case DecodeError::kOversized:
      return RejectReason::kOversized;
    case DecodeError::kTruncated:
      return RejectReason::kTruncated;
    case DecodeError::kBadVersion:
      return RejectReason::kBadVersion;
    case DecodeError::kBadSignature:
      return RejectReason::kBadSignature;
    default:
      return RejectReason::kMalformed;
  }
}

std::span<const std::uint8_t> as_span(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace

const char* reject_reason_name(RejectReason reason) {
  switch (reason) {
    case RejectReason::kOversized:
      return "oversized";
    case RejectReason::kTruncated:
      return "truncated";
    case RejectReason::kMalformed:
      return "malformed";
    case RejectReason::kBadVersion:
      return "bad_version";
    case RejectReason::kNotAllowed:
      return "not_allowed";
    case RejectReason::kPeerMismatch:
      return "peer_mismatch";
    case RejectReason::kBadSignature:
      return "bad_signature";
    case RejectReason::kWrongAuthor:
      return "wrong_author";
    case RejectReason::kUntrustedAuthor:
      return "untrusted_author";
    case RejectReason::kReplayed:
      return "replayed";
    case RejectReason::kStaleSequence:
      return "stale_sequence";
  }
  return "unknown";
}

Validator::Validator(const TrustSet* trust, const SequenceView* sequences,
                     std::size_t max_frame_bytes, LogSink log)
    : trust_(trust),
      sequences_(sequences),
      max_frame_bytes_(max_frame_bytes),
      log_(std::move(log)) {}

std::uint64_t Validator::total_rejected() const {
  std::uint64_t n = 0;
  for (auto c : counts_) n += c;
  return n;
}

void Validator::reject(RejectReason reason, const AgentKey& peer, std::string_view detail) {
  auto i = static_cast<std::size_t>(reason);
  ++counts_[i];
  if (!log_) return;
  LogWindow& w = log_windows_[i];
  if (w.start_ms == INT64_MIN || now_ms_ - w.start_ms >= kLogWindowMs) {
    if (w.suppressed > 0) {
      log_(LogLevel::kWarn, "rejected " + std::to_string(w.suppressed) + " more inbound (" +
                                reject_reason_name(reason) + ") not logged");
    }
    w = LogWindow{now_ms_, 0, 0};
  }
  if (w.lines >= kLogLinesPerWindow) {
    ++w.suppressed;
    return;
  }
  ++w.lines;
  log_(LogLevel::kWarn, std::string("rejected inbound from peer ") + agent_id(peer) + " (" +
                            reject_reason_name(reason) + "): " + std::string(detail));
}

bool Validator::decode_fresh(const SignedStatement& s, const AgentKey& peer, Statement* st) {
  DecodeError err = DecodeError::kNone;
  auto decoded = decode_statement_unverified(s.bytes, &err);
  if (!decoded) {
    reject(reason_of(err), peer, decoded.status().message());
    return false;
  }
  // A statement already held with these very bytes is dropped before its signature is
  // checked (a sync answer or a relay repeats many): the bytes held were verified when
  // they arrived, so the same bytes need no second verification, whatever signature
  // comes with them now.
  // Not only at or below highest_seq: an agent that took horizons holds statements above
  // gaps (retired slots it never held), and a catch-up brings many twice.
  if (sequences_->holds_identical(decoded->author, decoded->seq, s.bytes)) {
    ++duplicates_;
    return false;
  }
  *st = std::move(decoded).value();
  return true;
}

bool Validator::is_vouched(const Statement& st, const SignedStatement& s) {
  auto v = sequences_->vouched(st.author, st.seq);
  if (!v || *v != signed_digest(s)) return false;
  ++vouched_;
  return true;
}

bool Validator::finish_statement(Statement st, const SignedStatement& s, const AgentKey& peer,
                                 bool good, Statement* out) {
  if (!good) {
    RejectReason reason = RejectReason::kBadSignature;
    if (trust_->trusts_agent(peer)) {
      // Tell a forgery by the sending peer (it signed, but named another author) from
      // bytes damaged on the way: one more verify, only on this failure path.
      if (verify_signed(peer, s.bytes, s.signature, s.path)) reason = RejectReason::kWrongAuthor;
    }
    reject(reason, peer,
           "bad signature: statement " + std::to_string(st.seq) +
               " does not verify under its author " + st.author.hex());
    return false;
  }
  st.signed_form.bytes = s.bytes;
  st.signed_form.signature = s.signature;
  st.signed_form.path = s.path;
  if (!trust_->trusts_agent(st.author)) {
    reject(RejectReason::kUntrustedAuthor, peer,
           "statement " + std::to_string(st.seq) + " by untrusted author " + agent_id(st.author));
    return false;
  }
  std::uint64_t highest = sequences_->highest_seq(st.author);
  if (st.seq <= highest &&
      !(st.kind() == StatementKind::kAdvert && sequences_->is_void(st.author, st.seq)) &&
      !sequences_->is_retired(st.author, st.seq)) {
    // Other bytes at a held seq, signed by the author: only the author can have made both.
    // Not a rejection: the core keeps it as proof of equivocation (rule 5).
    ++equivocations_;
    if (log_) {
      log_(LogLevel::kWarn, "equivocation: statement " + std::to_string(st.seq) + " by " +
                                agent_id(st.author) + " differs from the one held (from peer " +
                                agent_id(peer) + ")");
    }
  }
  *out = std::move(st);
  return true;
}

bool Validator::validate_statement(const SignedStatement& s, const AgentKey& peer, Statement* out) {
  Statement st;
  if (!decode_fresh(s, peer, &st)) return false;
  bool good = is_vouched(st, s) || signature_good(st, s);
  return finish_statement(std::move(st), s, peer, good, out);
}

bool Validator::recently_checked(const Batch& b) const {
  for (const auto& r : recent_) {
    if (r == b) return true;
  }
  return false;
}

void Validator::checked(const Batch& b) {
  if (recently_checked(b)) return;
  recent_[recent_next_] = b;
  recent_next_ = (recent_next_ + 1) % recent_.size();
}

bool Validator::signature_good(const Statement& st, const SignedStatement& s) {
  if (s.path.empty()) return verify_signature(st.author, as_span(s.bytes), s.signature);
  auto root = batch_root(s.bytes, s.path);
  if (!root) return false;
  const Batch b{st.author, *root, s.signature};
  if (recently_checked(b)) {
    ++shared_;
    return true;
  }
  const std::string message = batch_signing_message(*root);
  if (!verify_signature(st.author, as_span(message), s.signature)) return false;
  checked(b);
  return true;
}

std::optional<Message> Validator::validate(std::span<const std::uint8_t> frame,
                                           const AgentKey& peer, PeerRole role) {
  DecodeError err = DecodeError::kNone;
  auto m = decode_message(frame, max_frame_bytes_, &err);
  if (!m) {
    reject(reason_of(err), peer, m.status().message());
    return std::nullopt;
  }
  Message msg = std::move(m).value();
  // A client asks (control requests) and reads artifacts (the fetching side of a
  // stream: request, credit, cancel); it says nothing else.
  if (role == PeerRole::kClient && !std::holds_alternative<ControlRequest>(msg.body) &&
      !std::holds_alternative<FetchRequest>(msg.body) &&
      !std::holds_alternative<Credit>(msg.body) && !std::holds_alternative<FetchError>(msg.body)) {
    reject(RejectReason::kNotAllowed, peer,
           std::string("client sent a ") + message_kind_name(msg.body) + " message");
    return std::nullopt;
  }
  if (auto* hello = std::get_if<Hello>(&msg.body)) {
    if (hello->agent != peer) {
      reject(RejectReason::kPeerMismatch, peer, "hello names agent " + agent_id(hello->agent));
      return std::nullopt;
    }
  } else if (auto* batch = std::get_if<StatementBatch>(&msg.body)) {
    // Decoded statements hold only their signed forms: each becomes its verified value,
    // or is dropped; the batch goes on with what is left, if anything.
    // Decoded (and duplicates dropped) in order on this thread, the signatures checked
    // (on two threads for a large batch: libsodium's verify is reentrant), then the rest
    // in order again, so counts and logs are those of a statement-by-statement pass.
    const std::size_t n = batch->statements.size();
    const std::uint64_t duplicates_before = duplicates_;
    std::vector<Statement> decoded(n);
    std::vector<char> fresh(n, 0);
    std::vector<char> good(n, 0);
    // Statements signed together: each one's batch, and which statement of this frame
    // checks the batch's signature for the others (kNone: none needed, or its own).
    constexpr std::size_t kNone = SIZE_MAX;
    std::vector<std::optional<Batch>> batches(n);
    std::vector<std::size_t> checked_by(n, kNone);
    std::vector<char> skip(n, 0);  // nothing to verify: not fresh, vouched, shared, or bad path
    std::map<Digest, std::size_t> first_of_root;  // the first statement of each batch root
    std::size_t to_verify = 0;
    // A statement an applied horizon vouches for is good without a check (a catch-up's
    // settled results, the bulk of it).
    for (std::size_t i = 0; i < n; ++i) {
      const SignedStatement& s = batch->statements[i].signed_form;
      fresh[i] = decode_fresh(s, peer, &decoded[i]) ? 1 : 0;
      if (fresh[i] && is_vouched(decoded[i], s)) good[i] = 1;
      skip[i] = !fresh[i] || good[i];
      if (!skip[i] && !s.path.empty()) {
        auto root = batch_root(s.bytes, s.path);
        if (!root) {
          skip[i] = 1;  // a malformed path: bad, whatever its signature
        } else {
          batches[i] = Batch{decoded[i].author, *root, s.signature};
          if (recently_checked(*batches[i])) {
            good[i] = 1;
            skip[i] = 1;
            ++shared_;
          } else if (auto first = first_of_root.try_emplace(*root, i); !first.second) {
            const std::size_t j = first.first->second;
            if (*batches[j] == *batches[i]) {  // same author and signature too
              checked_by[i] = j;
              skip[i] = 1;
            }
          }
        }
      }
      to_verify += static_cast<std::size_t>(!skip[i]);
    }
    auto verify = [&](std::size_t first, std::size_t step) {
      for (std::size_t i = first; i < n; i += step) {
        if (skip[i]) continue;
        const SignedStatement& s = batch->statements[i].signed_form;
        if (batches[i]) {
          const std::string message = batch_signing_message(batches[i]->root);
          good[i] = verify_signature(decoded[i].author, as_span(message), s.signature) ? 1 : 0;
        } else {
          good[i] = verify_signature(decoded[i].author, as_span(s.bytes), s.signature) ? 1 : 0;
        }
      }
    };
    if (to_verify >= kParallelVerifyMin) {
      std::thread other(verify, 1, 2);
      verify(0, 2);
      other.join();
    } else {
      verify(0, 1);
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (checked_by[i] != kNone) {
        good[i] = good[checked_by[i]];
        if (good[i]) ++shared_;
      } else if (batches[i] && good[i] && !skip[i]) {
        checked(*batches[i]);
      }
    }
    std::vector<Statement> kept;
    kept.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (!fresh[i]) continue;
      Statement st;
      if (finish_statement(std::move(decoded[i]), batch->statements[i].signed_form, peer,
                           good[i] != 0, &st)) {
        kept.push_back(std::move(st));
      }
    }
    // Passed on with nothing left too when nothing in it was refused (every statement
    // held already, or an empty answer), and when it ends an answer to a sync request
    // whatever was refused: such an answer ends the asker's pull from that peer
    // (promises::Core, continue_pull), and one that never arrived held the pull (and a
    // joiner's plan) until the request timed out. Any other batch with nothing but
    // refused statements carries nothing: dropped.
    const std::uint64_t duplicates = duplicates_ - duplicates_before;
    if (kept.empty() && n > duplicates && !batch->answer) return std::nullopt;
    batch->statements = std::move(kept);
  }
  return msg;
}

}  // namespace vow::transport
