// Attestations (docs/provenance.md): every successful result and every source version
// has an in-toto Statement (v1) whose predicate is SLSA build provenance (v1), derived
// from the signed statement alone (and, for a result, the definition of its stage),
// and signed by the statement's author over the DSSE pre-authentication encoding. The
// 64-byte signature travels inside the statement (JobResult::attestation,
// SourceVersion::attestation), so any agent holding the statement can rebuild the
// envelope that a third party checks with standard tools and the author's public key.
//
// Free functions over values; thread-safe.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "promises/pipeline.h"
#include "promises/statement.h"
#include "promises/status.h"
#include "transport/identity.h"

namespace vow::agent {

inline constexpr std::string_view kDssePayloadType = "application/vnd.in-toto+json";
inline constexpr std::string_view kInTotoStatementType = "https://in-toto.io/Statement/v1";
inline constexpr std::string_view kSlsaProvenanceType = "https://slsa.dev/provenance/v1";
inline constexpr std::string_view kJobBuildType = "urn:vow:job:v1";
inline constexpr std::string_view kSourceBuildType = "urn:vow:source-version:v1";
// Digest algorithm names of a DigestSet: a file's BLAKE2b-256, a tree's digest
// (BLAKE2b-256 of its vow-tree-v1 encoding, docs/identity.md).
inline constexpr std::string_view kFileDigestAlgorithm = "blake2b256";
inline constexpr std::string_view kTreeDigestAlgorithm = "vowTree1";

// What a stage digest covers (docs/identity.md), as attestations, `vow why`, `vow
// lineage` and `vow diff` show it: name, form, argv, inputs and outputs (sorted), env,
// foreach. Two stages with one digest give the same JSON.
nlohmann::json stage_definition_json(const promises::Stage& stage);

// The in-toto Statement of a successful result (`stage` is its stage's definition,
// required) or of a source version (`stage` unused), derived from the statement's
// author, seq, time and body, never from its attestation signature. kInvalid for any
// other statement, naming it.
Result<nlohmann::json> attestation_statement(const Statement& st, const promises::Stage* stage);

// The DSSE payload: the Statement's compact JSON, keys sorted (one byte string per
// Statement, on every agent).
std::string attestation_payload(const nlohmann::json& statement);

// The payload of a successful result's Statement written directly, byte for byte what
// attestation_payload(attestation_statement(st, stage)) makes (the agent signs one for
// every result it publishes: building the JSON tree first cost about 5% of a runner's
// CPU). The skeleton is written here, keys in nlohmann's order (sorted maps); a string
// that needs escaping, or replacing as invalid UTF-8, is escaped by nlohmann's dump. The
// tree stays the definition: tests compare the two, and verification rebuilds the tree.
Result<std::string> result_attestation_payload(const Statement& st, const promises::Stage* stage);

// DSSE v1 pre-authentication encoding:
// "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in ASCII decimal.
std::string dsse_pae(std::string_view payload_type, std::string_view payload);

AttestationSignature sign_attestation(const transport::Identity& identity,
                                      std::string_view payload);
bool verify_attestation(const AgentKey& signer, std::string_view payload,
                        const AttestationSignature& signature);

// Standard base64 (RFC 4648, padded), as DSSE envelopes carry payloads and signatures.
std::string base64(std::span<const std::uint8_t> bytes);
std::string base64(std::string_view bytes);

// The signature field of a result or source version (nullptr for other kinds).
const std::optional<AttestationSignature>* attestation_field(const Statement& st);

// For CoreConfig::attest: signs the attestation of an own successful result (whose
// stage `find_stage` must know: false if it does not, and nothing is added) or source
// version, and sets its signature field. True for every other statement.
bool attest_own(const transport::Identity& identity, Statement& st,
                const std::function<const promises::Stage*(const Digest&)>& find_stage);

// A statement's attestation as a third party receives it.
struct Attestation {
  nlohmann::json statement;  // the in-toto Statement (decoded payload)
  nlohmann::json envelope;   // the DSSE envelope, keyid = the author's public key in hex
  std::string line;          // the envelope as one bundle line (no newline)
  Digest digest;             // BLAKE2b-256 of `line`: the attestation digest
};

// Rebuilds the attestation of a statement held in a ledger and checks its signature:
// kNotFound if the statement carries none (signed by an agent older than
// attestations, or a failed result), kCorrupt if it does not verify (the stage
// definition given is not the one its author signed), naming the statement.
Result<Attestation> attestation_of(const Statement& st, const promises::Stage* stage);

// The key entry of a bundle's key file for an agent key, under its keyid (the key in
// hex): securesystemslib's form, plus the agent id (docs/provenance.md).
nlohmann::json public_key_json(const AgentKey& key);

}  // namespace vow::agent
