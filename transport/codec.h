// Codec: converts vow value types (promises/statement.h, transport/message.h) to and
// from Cap'n Proto wire bytes (transport/protocol.capnp), and signs and verifies
// statements. Decoding treats its input as hostile: sizes and framing are checked
// before Cap'n Proto sees the bytes, and Cap'n Proto reads with traversal and nesting
// limits; any failure is a Status, never an exception or a crash.
//
// Signing rule (docs/protocol.md): encode_statement() serializes the statement once;
// the author signs exactly those bytes; the pair travels and is stored unchanged, and
// decode_and_verify() checks the signature against the author key inside the bytes.
//
// Free functions over values; thread-safe (no shared state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "promises/statement.h"
#include "promises/status.h"
#include "transport/identity.h"
#include "transport/message.h"

namespace vow::transport {

// Size limits (docs/protocol.md). A frame larger than kMaxFrameBytes is dropped
// unread; a statement larger than kMaxStatementBytes is rejected when encoding or
// decoding.
// A statement of 12 MiB holds a directory of about 100,000 entries (a source version
// lists its entries: kMaxShardsPerStage, promises/planner.h).
inline constexpr std::size_t kMaxFrameBytes = 16u << 20;      // 16 MiB
inline constexpr std::size_t kMaxStatementBytes = 12u << 20;  // 12 MiB
inline constexpr std::size_t kMaxSegments = 64;              // Cap'n Proto segments
inline constexpr unsigned kMaxNestingDepth = 16;             // Cap'n Proto nesting
inline constexpr std::size_t kMaxListItems = 1'000'000;      // entries, endpoints, ...

// Serializes a statement to the bytes its author signs. kInvalid if the statement is
// larger than kMaxStatementBytes or has no author or a zero seq.
Result<std::string> encode_statement(const Statement& statement);
// Signs the encoding of `statement` with `identity`; the statement's author must be
// identity.key() (a bug otherwise).
Result<SignedStatement> sign_statement(const Identity& identity, const Statement& statement);
// The signer the core is given (promises::CoreConfig::sign): the statement's signed
// form, or an empty one if it cannot be encoded (over kMaxStatementBytes).
SignedForm sign_or_empty(const Identity& identity, const Statement& statement);
// Signature over bytes already produced by encode_statement.
Signature sign(const Identity& identity, std::string_view bytes);
// Signs statements published together, whose forms hold the bytes encode_statement
// made: one of them alone is signed over its bytes (an empty path); two or more with one
// signature over the root of their batch, each given its path (promises/batch_proof.h);
// more than kMaxBatchLeaves in batches of that many.
void sign_together(const Identity& identity, const std::vector<SignedForm*>& forms);
// Whether SIGNATURE (with PATH: the statement's place in its batch, or empty) is
// AUTHOR's over BYTES.
bool verify_signed(const AgentKey& author, std::string_view bytes, const Signature& signature,
                   std::string_view path);

// Why decoding or verification failed, for counting (validator.h maps these to reasons).
enum class DecodeError : std::uint8_t {
  kNone = 0,
  kOversized,     // larger than the limit
  kTruncated,     // framing declares more bytes than present
  kMalformed,     // bad framing, bad Cap'n Proto, a field of the wrong size or value
  kBadVersion,    // protocol version we do not speak
  kBadSignature,  // signature does not verify under the author named in the bytes
};

// Decodes statement bytes and verifies the signature under the author key they name;
// the statement returned carries them as its signed form. Never trusts anything:
// check the author against a TrustSet afterwards.
// On failure `error` (if given) tells which check failed.
Result<Statement> decode_and_verify(std::string_view bytes, const Signature& signature,
                                    std::string_view path, DecodeError* error = nullptr);
Result<Statement> decode_and_verify(const SignedStatement& s, DecodeError* error = nullptr);
// Decodes without verifying (for tools that show a statement that failed to verify, and
// for a look at its name before the signature is checked).
Result<Statement> decode_statement_unverified(std::string_view bytes, DecodeError* error = nullptr);
// The second half of decode_and_verify: verifies the signature of ST, decoded from BYTES
// by decode_statement_unverified, and gives it its signed form.
Result<Statement> verify_decoded(Statement st, std::string_view bytes,
                                 const Signature& signature, std::string_view path,
                                 DecodeError* error = nullptr);

// Frames. encode_message fails (kInvalid) for a message over kMaxFrameBytes.
// decode_message checks size and framing, decodes with traversal limits and checks
// the protocol version; it does NOT verify statement signatures (the validator does).
Result<std::string> encode_message(const Message& message);
Result<Message> decode_message(std::span<const std::uint8_t> frame,
                               std::size_t max_frame_bytes = kMaxFrameBytes,
                               DecodeError* error = nullptr);
Result<Message> decode_message(std::string_view frame, std::size_t max_frame_bytes = kMaxFrameBytes,
                               DecodeError* error = nullptr);

}  // namespace vow::transport
