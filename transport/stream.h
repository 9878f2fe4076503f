// Artifact streaming (docs/coordination.md, docs/protocol.md): chunked, credit-based flow
// control, resumable from an offset, BLAKE2b-256 verified at the end.
//
// The receiver sends FetchRequest{stream, artifact, offset, credits}; the sender sends
// chunks in offset order, one per credit; the receiver writes each chunk to its sink
// and grants credit back as it goes, so at most `window_chunks` chunks are in flight.
// After the last chunk the receiver checks the length and the digest of the whole
// artifact (re-reading the bytes before `offset` from its sink when resuming).
//
// Transport does not know the store: the sending agent adapts its store to
// ArtifactProvider/ChunkSource, the receiving agent to ChunkSink.
//
// Streams is a state machine without sockets or clock: messages and ticks go in,
// messages to send come out through `send`. Owned by a Transport; not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <span>
#include <vector>

#include "promises/digest.h"
#include "promises/statement.h"
#include "promises/status.h"
#include "transport/message.h"

namespace vow::transport {

// The bytes of one file artifact on the sending side.
class ChunkSource {
 public:
  virtual ~ChunkSource() = default;
  virtual std::uint64_t size() const = 0;
  // Fills `out` with the bytes at [offset, offset + out.size()); the range is in bounds.
  virtual Status read(std::uint64_t offset, std::span<std::uint8_t> out) = 0;
};

// Opens artifacts for peers that fetch them. kNotFound if not held.
class ArtifactProvider {
 public:
  virtual ~ArtifactProvider() = default;
  virtual Result<std::unique_ptr<ChunkSource>> open(const Digest& artifact) = 0;
};

// Where a fetched artifact goes on the receiving side.
class ChunkSink {
 public:
  virtual ~ChunkSink() = default;
  // Writes bytes at `offset` (chunks arrive in order, without gaps).
  virtual Status write(std::uint64_t offset, std::span<const std::uint8_t> data) = 0;
  // Reads back bytes written earlier (by this or an earlier, interrupted fetch), to hash
  // the prefix [0, offset) when a fetch resumes at `offset`.
  virtual Status read(std::uint64_t offset, std::span<std::uint8_t> out) = 0;
  // All `total_bytes` arrived and their digest matched: make the artifact durable.
  virtual Status finish(std::uint64_t total_bytes) = 0;
  // The fetch failed. Bytes before the outcome's `received_bytes` may be kept to resume.
  virtual void abort(const Status& why) = 0;
};

struct StreamOptions {
  std::uint32_t chunk_bytes = 256u << 10;  // 256 KiB
  std::uint32_t window_chunks = 16;        // credits in flight per stream
  std::int64_t idle_timeout_ms = 5'000;    // no progress: the stream fails
  std::size_t max_receiving = 64;          // concurrent fetches by this agent
  std::size_t max_sending = 64;            // concurrent streams served
};
inline constexpr std::uint32_t kMaxChunkBytes = 1u << 20;  // served chunks never exceed

struct FetchOutcome {
  std::uint64_t stream_id = 0;
  AgentKey peer;
  Digest artifact;
  Status status;                     // ok: verified and finished
  std::uint64_t received_bytes = 0;  // contiguous bytes in the sink: resume offset
  std::uint64_t total_bytes = 0;     // as announced by the sender (0: unknown)
};

struct StreamCounters {
  std::uint64_t chunks_sent = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t chunks_received = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t fetches_ok = 0;
  std::uint64_t fetches_failed = 0;
  std::uint64_t serves_refused = 0;
  std::uint64_t bulk_chunks_sent = 0;      // of chunks_sent: on the plain bulk link
  std::uint64_t bulk_chunks_received = 0;  // of chunks_received: from the plain bulk listener
  std::uint64_t bulk_frames_dropped = 0;   // plain frames naming no stream, or not a chunk
};

// Integrity-only bulk (docs/protocol.md, "Bulk without encryption"). The receiver asks
// for it in its FetchRequest (a port of its plain listener and a random token); a sender
// whose operator allows it opens a plain link to that port on the host it already dials
// the receiver at and sends the chunks there, each frame led by the token. The bytes are
// trusted for what they always were: the receiver hashes every byte and checks the
// digest a signed statement named. What is given up is confidentiality on the wire.
struct BulkRoute {
  // Whether a plain link to PEER's listener at PORT can be used (opened if need be).
  std::function<bool(const AgentKey& peer, std::uint16_t port)> open;
  // Sends a chunk message on it, led by TOKEN; false if it could not be queued now.
  std::function<bool(const AgentKey& peer, std::string_view token, const Message& message)> send;
};

class Streams {
 public:
  // Sends a message to a peer; false if it could not be queued now (retry later).
  using SendFn = std::function<bool(const AgentKey& peer, const Message& message)>;

  Streams(StreamOptions options, SendFn send);
  ~Streams();
  Streams(const Streams&) = delete;
  Streams& operator=(const Streams&) = delete;

  void set_provider(ArtifactProvider* provider) { provider_ = provider; }
  // Integrity-only bulk: ASK_PORT (non-zero) is this agent's plain listener, asked for in
  // its fetches; with ROUTE, chunks it serves go plain to a receiver that asks.
  void set_bulk(std::uint16_t ask_port, std::optional<BulkRoute> route);
  // A frame from the plain listener: the token that leads it and the message after it.
  // The peer whose stream the token names (nullopt: none; the frame is dropped, counted).
  std::optional<AgentKey> bulk_peer(std::string_view token);
  // The message of such a frame, validated as the peer's (a chunk, or dropped and counted).
  void on_bulk_message(std::string_view token, const Message& m, std::int64_t now_ms);

  // Starts fetching `artifact` from `peer` into `sink` from `offset` (bytes before it
  // must already be in the sink). `expected_bytes`, if known (ArtifactRef.size_bytes),
  // is checked too. Returns the stream id; the result arrives as a FetchOutcome.
  Result<std::uint64_t> fetch(const AgentKey& peer, const Digest& artifact, std::uint64_t offset,
                              std::optional<std::uint64_t> expected_bytes,
                              std::unique_ptr<ChunkSink> sink, std::int64_t now_ms);
  // Gives up a fetch (outcome kUnavailable "cancelled"); tells the sender.
  void cancel(std::uint64_t stream_id);

  // Stream messages from a validated peer. Returns false if `m` is not a stream message.
  bool on_message(const AgentKey& peer, const Message& m, std::int64_t now_ms);
  // Sends what credits allow and fails streams idle past the timeout.
  void tick(std::int64_t now_ms);
  // A link to `peer` is known to be gone: its streams fail now (resume elsewhere).
  void peer_lost(const AgentKey& peer, std::int64_t now_ms);

  std::vector<FetchOutcome> take_outcomes();
  const StreamCounters& counters() const { return counters_; }
  std::size_t receiving() const { return receiving_.size(); }
  std::size_t sending() const { return sending_.size(); }

 private:
  struct Receiving;
  struct Sending;
  void on_chunk(const AgentKey& peer, const Chunk& c, std::int64_t now_ms);
  void on_fetch_request(const AgentKey& peer, const FetchRequest& r, std::int64_t now_ms);
  void finish(std::uint64_t stream_id, Status status);
  void pump(Sending& s, std::int64_t now_ms);

  StreamOptions options_;
  SendFn send_;
  std::uint16_t bulk_port_ = 0;             // set_bulk: asked for in fetches
  std::optional<BulkRoute> bulk_route_;     // set_bulk: chunks served plain
  std::map<std::string, std::uint64_t> bulk_tokens_;  // receiving streams' tokens
  std::set<AgentKey> bulk_stalled_;         // a plain stream from it stalled: not asked again
  ArtifactProvider* provider_ = nullptr;
  std::uint64_t next_stream_id_ = 1;
  std::map<std::uint64_t, std::unique_ptr<Receiving>> receiving_;
  std::map<std::pair<AgentKey, std::uint64_t>, std::unique_ptr<Sending>> sending_;
  std::vector<FetchOutcome> outcomes_;
  StreamCounters counters_;
};

}  // namespace vow::transport
