// Messages: the plain C++ values of everything that crosses a vow link, mirroring
// transport/protocol.capnp (the specification). The core's messages (hello, heartbeat,
// sync request, statement batch, have request, have) are its own types,
// promises/messages.h, carried as they are; the transport adds its own for artifact
// streaming and control queries. The codec (codec.h) converts them to and from wire
// bytes; Cap'n Proto types never appear outside transport/*.cc.
//
// Statements inside a StatementBatch travel as their signed forms: see the type's
// comment for what a decoded batch holds before and after the validator.
//
// Value types; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "promises/messages.h"
#include "promises/statement.h"
#include "transport/identity.h"

namespace vow::transport {

inline constexpr std::uint32_t kProtocolVersion = 1;

// A statement as it travels and is stored: its author's serialized bytes and the
// detached signature over exactly those bytes (promises/statement.h: a verified or
// signed Statement carries it). Verify with decode_and_verify().
using SignedStatement = SignedForm;
static_assert(std::is_same_v<decltype(SignedForm::signature), Signature>);

// The core's messages, named here as the transport's own (one declaration, in
// promises/messages.h).
using promises::Have;
using promises::HaveRequest;
using promises::Heartbeat;
using promises::Hello;
using promises::MemberState;
using promises::MemberUpdate;
using promises::Probe;
using promises::StatementBatch;
using promises::SyncRequest;

inline constexpr std::size_t kBulkTokenBytes = 16;

struct FetchRequest {
  std::uint64_t stream_id = 0;
  Digest artifact;
  std::uint64_t offset = 0;
  std::uint32_t credits = 0;
  std::uint32_t chunk_bytes = 0;
  std::uint16_t bulk_port = 0;  // integrity-only bulk asked for (stream.h); 0: not
  std::string bulk_token;       // 16 bytes leading each plain chunk frame
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

// The core's messages first, in promises::MessageBody's order, then the transport's.
using MessageBody =
    std::variant<Hello, Heartbeat, SyncRequest, StatementBatch, HaveRequest, Have, Probe,
                 FetchRequest, Chunk, Credit, FetchError, ControlRequest, ControlResponse>;

struct Message {
  std::uint32_t protocol_version = kProtocolVersion;
  MessageBody body;
  bool operator==(const Message&) const = default;
};

const char* message_kind_name(const MessageBody& body);

// The core's message as it travels: the same value in the wider variant.
inline Message wire_message(promises::Message message) {
  return std::visit(
      [](auto&& m) {
        return Message{kProtocolVersion, MessageBody(std::move(m))};
      },
      std::move(message.body));
}

// The core's message inside an inbound one; nullopt for the transport's own messages.
inline std::optional<promises::Message> core_message(Message message) {
  return std::visit(
      [](auto&& m) -> std::optional<promises::Message> {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_constructible_v<promises::MessageBody, T>) {
          return promises::Message{std::move(m)};
        } else {
          return std::nullopt;
        }
      },
      std::move(message.body));
}

}  // namespace vow::transport
