// Messages: the plain C++ values of everything that crosses a vow link, mirroring
// transport/protocol.capnp (the specification). The codec (codec.h) converts them to
// and from wire bytes; Cap'n Proto types never appear outside transport/*.cc.
//
// Value types; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "promises/statement.h"
#include "transport/identity.h"

namespace vow::transport {

inline constexpr std::uint32_t kProtocolVersion = 1;

// A statement as it travels and is stored: its author's serialized bytes and the
// detached signature over exactly those bytes (promises/statement.h: a verified or
// signed Statement carries it). Verify with decode_and_verify().
using SignedStatement = SignedForm;
static_assert(std::is_same_v<decltype(SignedForm::signature), Signature>);

struct Hello {
  AgentKey agent;
  std::string name;
  std::vector<std::string> endpoints;
  std::uint32_t protocol_version = kProtocolVersion;
  VersionVector version_vector;
  bool operator==(const Hello&) const = default;
};

struct Heartbeat {
  std::uint32_t running = 0;
  std::uint32_t capacity = 0;
  std::uint32_t active_claims = 0;
  std::uint64_t highest_seq = 0;
  std::vector<std::pair<Digest, std::uint32_t>> claims;  // (job, epoch) without a result
  std::uint64_t vv_sum = 0;
  std::uint64_t holdings_incarnation = 0;
  std::uint64_t holdings_version = 0;
  bool operator==(const Heartbeat&) const = default;
};

// One signed statement. Inbound, `statement` is the verified decoded value.
struct StatementMsg {
  SignedStatement signed_statement;
  Statement statement;  // filled by the receiver after verification; ignored on send
  bool operator==(const StatementMsg&) const = default;
};

struct LedgerRequest {
  VersionVector have;
  bool operator==(const LedgerRequest&) const = default;
};

// Inbound, only the statements that passed validation are kept (in order), with their
// decoded values in `statements` (same index).
struct LedgerBatch {
  std::vector<SignedStatement> signed_statements;
  std::vector<Statement> statements;  // filled by the receiver; ignored on send
  bool more = false;
  bool operator==(const LedgerBatch&) const = default;
};

struct FetchRequest {
  std::uint64_t stream_id = 0;
  Digest artifact;
  std::uint64_t offset = 0;
  std::uint32_t credits = 0;
  std::uint32_t chunk_bytes = 0;
  bool operator==(const FetchRequest&) const = default;
};

struct Chunk {
  std::uint64_t stream_id = 0;
  std::uint64_t offset = 0;
  std::uint64_t total_bytes = 0;
  std::string data;
  bool last = false;
  bool operator==(const Chunk&) const = default;
};

struct Credit {
  std::uint64_t stream_id = 0;
  std::uint32_t credits = 0;
  bool cancel = false;
  bool operator==(const Credit&) const = default;
};

struct FetchError {
  std::uint64_t stream_id = 0;
  std::uint8_t code = 0;  // a StatusCode
  std::string message;
  bool operator==(const FetchError&) const = default;
};

struct ControlRequest {
  std::uint64_t request_id = 0;
  std::string method;
  std::string json;
  bool operator==(const ControlRequest&) const = default;
};

struct ControlResponse {
  std::uint64_t request_id = 0;
  bool ok = false;
  std::string json;
  std::string error;
  bool operator==(const ControlResponse&) const = default;
};

struct HaveRequest {
  bool operator==(const HaveRequest&) const = default;
};

// The artifacts the sender holds (all of them), at a holdings version.
struct Have {
  std::uint64_t incarnation = 0;
  std::uint64_t version = 0;
  std::vector<Digest> digests;
  bool operator==(const Have&) const = default;
};

using MessageBody =
    std::variant<Hello, Heartbeat, StatementMsg, LedgerRequest, LedgerBatch, FetchRequest, Chunk,
                 Credit, FetchError, ControlRequest, ControlResponse, HaveRequest, Have>;

struct Message {
  std::uint32_t protocol_version = kProtocolVersion;
  MessageBody body;
  bool operator==(const Message&) const = default;
};

const char* message_kind_name(const MessageBody& body);

}  // namespace vow::transport
